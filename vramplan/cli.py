"""The `vramplan` command line. Thin: parse, build dataclasses, call the library, render."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import click

from .planner.methods import method_options
from .planner.errors import ConfigError
from .planner.specs import ADAPTER_DTYPES, ATTENTIONS, LOSSES, OPTIMIZERS, PRECISIONS



class VramplanGroup(click.Group):
    """Turns every failure into a one-line `Error: ...` (JSON on stdout with --json) and its exit code, never a traceback."""

    def invoke(self, ctx):
        as_json = "--json" in [*getattr(ctx, "_protected_args", ()), *ctx.args]  # the subcommand's own args
        try:
            return super().invoke(ctx)
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001  (errors_json sorts them; click's own pass through)
            from .errors_json import handle

            handle(exc, as_json)


@click.group(cls=VramplanGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vramplan")
def cli():
    """Will this LLM fine-tuning run fit your GPU, and with which settings?

    \b
    Example:
      vramplan estimate --model 8b --gpu t4
    """


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for value in values:
        out += [part.strip() for part in value.split(",") if part.strip()]
    return tuple(out)


@dataclass(frozen=True)
class RunOptions:
    """The run-shaping flags shared by `estimate` and `calibrate --trace`."""

    rank: int
    alpha: float | None
    dropout: float
    targets: str
    batch: int
    seq_len: int
    grad_ckpt: bool
    optimizer: str
    precision: str | None
    attention: str
    double_quant: bool
    adapter_dtype: str
    method_options: tuple[tuple[str, object], ...] = ()  # the flags of `planner.methods.method_options()`
    # the memory savers (planner/savers.py)
    loss: str = "standard"
    loss_chunk: int = 1024
    offload_activations: bool = False
    packing: bool = False
    expandable_segments: bool = False
    kbit_upcast: bool = True


def transformers_version_option(func):
    """`--transformers-version`, refused in one line as it is parsed when it is no version (planner/stack.py)."""

    def check(ctx, param, value):
        from .planner.stack import version_problem

        if value is not None and (problem := version_problem(value)):
            raise ConfigError(problem)
        return value

    return click.option(
        "--transformers-version", default=None, metavar="X.Y.Z", callback=check,
        help="Model the memory paths of this transformers version (the causal-LM loss's shifted-logits copy before 4.49, SDPA's repeated k/v before 4.54) [default: the installed one].",
    )(func)


def run_options(func):
    """Decorate a command with every flag that shapes a run."""
    options = [
        click.option("--rank", "-r", type=int, default=16, show_default=True, help="LoRA/DoRA rank."),
        click.option("--alpha", type=float, default=None, help="LoRA alpha [default: 2 x rank]."),
        click.option("--dropout", type=float, default=0.05, show_default=True, help="LoRA dropout (0 drops peft's dropout copy)."),
        click.option("--targets", "-t", default="all-linear", show_default=True, help="Comma-separated module names (q,k,v,o,gate,up,down or q_proj,...), presets attention, mlp, all-linear; lm_head allowed."),
        click.option("--batch", "-b", type=int, default=1, show_default=True, help="Micro-batch size per step."),
        click.option("--seq-len", "-s", type=int, default=2048, show_default=True, help="Tokens per example."),
        click.option("--grad-ckpt/--no-grad-ckpt", default=True, show_default=True, help="Gradient checkpointing."),
        click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adamw", show_default=True),
        click.option("--precision", type=click.Choice(PRECISIONS), default=None, help="bf16/fp16: pure 16-bit weights; *-mixed: fp32 master + autocast [default: bf16, fp16 where the GPU lacks bf16]."),
        click.option("--attention", type=click.Choice(ATTENTIONS), default="sdpa", show_default=True),
        click.option("--double-quant/--no-double-quant", default=True, show_default=True, help="NF4 double quantization (QLoRA/QDoRA)."),
        click.option("--adapter-dtype", type=click.Choice(ADAPTER_DTYPES), default="fp32", show_default=True, help="Adapter dtype (fp32 is peft's default)."),
        click.option("--loss", type=click.Choice(LOSSES), default="standard", show_default=True, help="Loss implementation: standard (full logits), chunked (head + cross-entropy per token chunk, plain torch), fused (Liger Kernel, CUDA)."),
        click.option("--loss-chunk", type=int, default=1024, show_default=True, help="Tokens per chunk of --loss chunked."),
        click.option("--offload-activations", is_flag=True, help="Keep the checkpointed layer inputs in pinned host RAM (transformers' offload=True; needs --grad-ckpt)."),
        click.option("--packing", is_flag=True, help="Padding-free batches: examples packed into seq-len, position ids reset per example (sdpa/flash)."),
        click.option("--expandable-segments", is_flag=True, help="PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True: less allocator slack (assumed, not yet GPU-calibrated)."),
        click.option("--kbit-upcast/--no-kbit-upcast", default=True, show_default=True, help="4-bit base (QLoRA, QDoRA, QAdapter): prepare_model_for_kbit_training's fp32 upcast of embeddings, norms and lm_head; --no-kbit-upcast keeps them 16-bit (no effect on other methods)."),
        click.option("--allow-long-context", is_flag=True, help="Allow a --seq-len beyond the model's context window (refused otherwise), and show max seq len beyond it."),
    ]
    for method_option in method_options():  # flags only some methods have, from their records
        kind = click.Choice(method_option.choices) if method_option.choices else method_option.kind
        options.append(click.option(method_option.flag, method_option.name, type=kind, default=None, help=method_option.help))
    for option in reversed(options):
        func = option(func)
    return func


def options_from_kwargs(kwargs: dict) -> RunOptions:
    names = [name for name in RunOptions.__dataclass_fields__ if name != "method_options"]
    values = {name: kwargs.pop(name) for name in names}
    given = []
    for option in method_options():  # only the method options typed: the rest keep their records' defaults
        value = kwargs.pop(option.name, None)
        if value is not None:
            given.append((option.name, value))
    return RunOptions(**values, method_options=tuple(given))


def main():
    cli(prog_name="vramplan")


from . import calibrate_cmd, commands, recommend_cmd, report_cmd, run_cmd  # noqa: E402,F401  (registers the subcommands)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
