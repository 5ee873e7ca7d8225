"""`vramplan run`: fine-tune with the bundled trainer, from a plan file or from flags."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from .cli import cli, options_from_kwargs, run_options
from .planner.errors import ConfigError
from .planner.methods import METHODS
from .planner.specs import DEVICE_KINDS
from .calibrate.trainer.distributed import STRATEGIES as TRAINER_STRATEGIES
from .planner.vision import is_vlm_config
from .vlm_run_cmd import pop_vlm_flags, run_vlm_command, vlm_flags_given, vlm_run_options

# plan "config" key -> the `run` parameter it fills
PLAN_KEYS = {
    "method": "method", "rank": "rank", "alpha": "alpha", "dropout": "dropout", "targets": "targets",
    "batch": "batch", "grad_accum": "grad_accum", "grad_ckpt": "grad_ckpt", "optimizer": "optimizer",
    "precision": "precision", "attention": "attention", "double_quant": "double_quant",
    "adapter_dtype": "adapter_dtype", "seq_len": "seq_len", "learning_rate": "lr", "epochs": "epochs",
    # the memory savers: plan key and flag share the name (planner.plan_file.SAVER_KEYS)
    "loss": "loss", "loss_chunk": "loss_chunk", "offload_activations": "offload_activations", "packing": "packing",
    "expandable_segments": "expandable_segments", "kbit_upcast": "kbit_upcast",
}
ARCH_FIELDS = ("model_type", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "vocab_size")


def _plan_model_name(model) -> str | None:
    if isinstance(model, dict):
        model = model.get("name") or model.get("id") or model.get("path")
    return str(model) if model else None


def _arch(spec) -> tuple:
    return tuple(getattr(spec, name) for name in ARCH_FIELDS)


def plan_model_matches(planned: str, model_dir: Path, config: dict, spec) -> bool:
    """Same name or path, or (for a catalog model or a local path) the same architecture."""
    names = {str(model_dir), str(model_dir.resolve()), model_dir.name, str(config.get("_name_or_path") or ""), spec.name}
    if planned in names or Path(planned).expanduser().resolve() == model_dir.resolve():
        return True
    from .planner.catalog import resolve_model
    from .planner.catalog.models import MODEL_CONFIGS
    from .planner.errors import UnknownModelError

    offline = Path(planned).expanduser().exists() or "/" not in planned or planned.lower() in {k.lower() for k in MODEL_CONFIGS}
    if not offline:  # an unknown hub id: resolving it would need the network
        return False
    try:
        return _arch(resolve_model(planned).spec) == _arch(spec)
    except UnknownModelError:
        return False


def same_gpu(planned: dict, gpu) -> bool:
    key, total = planned.get("key"), planned.get("total_bytes")
    if key and key != "custom" and gpu.key != "custom":
        return key == gpu.key
    if total:
        return abs(int(total) - gpu.total_bytes) <= 0.02 * int(total)
    return str(planned.get("name", "")).lower() == gpu.name.lower()


def check_plan_target(doc: dict, plan: str, model_dir: Path, gpu, force: bool) -> list[str]:
    """Refuse a plan made for another model or GPU (``force`` turns that into notes)."""
    from .planner.inventory import spec_from_path

    problems = []
    spec, config = spec_from_path(model_dir)
    planned = _plan_model_name(doc.get("model"))
    if planned and not plan_model_matches(planned, model_dir, config, spec):
        problems.append(f"it was made for model {planned!r}, not {model_dir}")
    planned_gpu = doc.get("gpu")
    if isinstance(planned_gpu, dict) and planned_gpu:
        label = planned_gpu.get("name") or planned_gpu.get("key")
        if gpu is None:
            problems.append(f"it was made for {label} but no GPU is given (--gpu) or visible")
        elif not same_gpu(planned_gpu, gpu):
            problems.append(f"it was made for {label}, not {gpu.name}")
    if problems and not force:
        raise ConfigError(f"--plan {plan}: {'; '.join(problems)}; make a plan for this setup, or pass --force to use it anyway")
    return [f"--plan: {p} (--force)" for p in problems]


def _typed(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def apply_plan(ctx: click.Context, params: dict, doc: dict, plan) -> tuple[list[str], dict]:
    """Fill ``params`` from the plan's config; flags given on the command line win.

    Returns notes for the user and the trainer settings that have no flag (rsLoRA, warmup).
    """
    from .planner.plan_file import PARALLEL_KEYS

    config = dict(doc["config"])
    if config.get("target_preset"):  # what the run was estimated with (e.g. all-linear), not its expansion
        config["targets"] = config["target_preset"]
    scheduler = config.pop("lr_scheduler", None)
    if scheduler not in (None, "cosine"):
        raise ConfigError(f"--plan {plan}: lr_scheduler {scheduler!r}: the bundled trainer runs a cosine schedule only")
    extras = {"use_rslora": bool(config.pop("use_rslora", False)), "warmup_ratio": config.pop("warmup_ratio", None)}
    config.pop("target_preset", None)
    notes = apply_parallel(ctx, params, {key: config.pop(key) for key in PARALLEL_KEYS if key in config}, plan)
    method_options = config.pop("method_options", None) or {}
    if not isinstance(method_options, dict):
        raise ConfigError(f"--plan {plan}: config.method_options must be a mapping of option to value, got {method_options!r}")
    keys = dict(PLAN_KEYS)
    for name, value in method_options.items():  # the method's own settings have flags of the same name
        if name in params:
            config[name], keys[name] = value, name
        else:
            config[f"method_options.{name}"] = value
    unknown = sorted(set(config) - set(keys))
    notes += [f"--plan: ignored unknown config keys {', '.join(unknown)}"] if unknown else []
    by_name = {p.name: p for p in ctx.command.params}
    for key, value in config.items():
        name = keys.get(key)
        if name is None or value is None:  # e.g. rank and alpha are null in a full fine-tuning plan
            continue
        if _typed(ctx, name):
            notes.append(f"--{name.replace('_', '-')} {params[name]} overrides the plan's {key} {value!r}")
            continue
        if isinstance(value, (list, tuple)) and name == "targets":
            value = ",".join(str(v) for v in value)
        try:
            params[name] = by_name[name].type.convert(value, by_name[name], ctx)
        except click.BadParameter as exc:
            raise ConfigError(f"--plan {plan}: config.{key}: {exc.message}") from None
    return notes, {k: v for k, v in extras.items() if v is not None}


def apply_parallel(ctx: click.Context, params: dict, planned: dict, plan) -> list[str]:
    """Take the plan's gpus and strategy (flags given win); refuse the offload the trainer cannot do.

    The bundled trainer runs ddp or fsdp (full shard): a plan's ZeRO stage or SHARD_GRAD_OP runs as
    fsdp, which shards at least as much per device.
    """

    gpus, strategy, offload = planned.get("gpus") or 1, planned.get("strategy"), planned.get("offload") or "none"
    if _typed(ctx, "gpus") and params["gpus"] == 1 and not _typed(ctx, "strategy"):
        strategy, offload = None, "none"  # one device shards nothing
    notes = []
    if strategy is not None and strategy not in TRAINER_STRATEGIES and not _typed(ctx, "strategy"):
        notes.append(f"--plan: strategy {strategy} runs as fsdp: the bundled trainer runs ddp or fsdp (full shard), "
                     "which holds no more per device")
        strategy = "fsdp"
    for name, value in (("gpus", gpus), ("strategy", strategy)):
        if not _typed(ctx, name):
            params[name] = value
        elif params[name] != value:
            notes.append(f"--{name} {params[name]} overrides the plan's {name} {value!r}")
    if offload != "none" and params["strategy"] is not None:
        problem = f"offload {offload!r}: the bundled trainer keeps weights and optimizer states on the device"
        if not params["force"]:
            raise ConfigError(f"--plan {plan}: {problem}; make a plan without offload, or pass --force to train without it")
        notes.append(f"--plan: {problem} (--force)")
    return notes


def _detected_gpu(device: str | None):
    from .preflight import default_device

    if default_device(device) != "cuda":
        return None
    import torch

    from .calibrate.trainer.model_dir import capacity_gpu

    if device == "cpu" or not torch.cuda.is_available():
        return None
    return capacity_gpu(None, "cuda")


@cli.command("run")
@click.option("--apply-recommendation", is_flag=True, help="Train with the recommended settings: those in --plan (`vramplan recommend --out plan.yaml` writes one). Without --plan the flags are used as given. Flags given explicitly win over the plan.")
@click.option("--model", "-m", required=True, type=click.Path(), help="Local model directory: config.json, a tokenizer, and *.safetensors weights (none: random init, said so).")
@click.option("--data", "-d", required=True, type=click.Path(), help="Training rows with 'text', 'instruction'/'input'/'output', or chat 'messages': JSONL, JSON, CSV, Parquet, or a datasets save_to_disk folder.")
@click.option("--plan", default=None, type=click.Path(dir_okay=False), help="Plan file written by `vramplan recommend --out` (JSON or YAML): its config, --gpus and --strategy, checked against this model and GPU.")
@click.option("--gpu", "-g", default=None, help="GPU key (t4, l4, a100-80gb, ...): what the plan and precision default are checked against.")
@click.option("--gpu-mem", default=None, help="Any other GPU by its memory, e.g. 22GiB.")
@click.option("--out", "-o", default=None, type=click.Path(file_okay=False), help="Output directory (refused if it holds another run) [default: runs/<model>-<method>].")
@click.option("--method", type=click.Choice(tuple(METHODS)), default="qlora", show_default=True)
@run_options
@click.option("--grad-accum", type=int, default=1, show_default=True, help="Micro-batches per optimizer step.")
@click.option("--lr", type=float, default=2e-4, show_default=True, help="Peak learning rate (cosine schedule, 3% warmup).")
@click.option("--epochs", type=float, default=1.0, show_default=True, help="Passes over the training rows.")
@click.option("--max-steps", type=int, default=None, help="Stop after this many optimizer steps (overrides --epochs).")
@click.option("--save-every", type=int, default=100, show_default=True, help="Optimizer steps between checkpoints (one is always saved at the end).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(DEVICE_KINDS), default=None, help="Where to train [default: cuda when available, else cpu].")
@click.option("--gpus", type=int, default=1, show_default=True, help="Train on this many devices, one process each (accelerate launch; on CPU: processes over gloo). Needs --strategy above 1.")
@click.option("--strategy", type=click.Choice(TRAINER_STRATEGIES), default=None, help="With --gpus above 1: ddp (a full copy per device) or fsdp (full shard; CUDA only).")
@click.option("--db", type=click.Path(dir_okay=False), default=None, help="Measurement store the run is recorded in [default: the user data directory].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint.")
@click.option("--force", is_flag=True, help="Start even if the estimate does not fit, or the plan is for another model/GPU.")
@click.option("--auto-fallback", is_flag=True, help="Step down (smaller micro-batch, checkpointing, shorter sequences) until it fits, before and on OOM.")
@click.option("--skip-bad-rows", is_flag=True, help="Skip (and count) malformed data rows instead of stopping at the first.")
@click.option("--merge", is_flag=True, help="Also save the base model with the adapter merged in (OUT/merged).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--html", "html_path", default=None, type=click.Path(dir_okay=False), help="Also write a self-contained HTML page of the run: loss curve, tokens/s, measured peak against the estimate.")
@vlm_run_options
@click.pass_context
def run_command(ctx, **params):
    """Fine-tune a local model with the bundled trainer and record the run's real peak memory.

    Checks the estimate against the GPU first, checkpoints as it goes (--resume continues),
    saves the adapter (OUT/adapter) or model (OUT/model), and stores the measured run beside
    its estimate.

    \b
    Example:
      vramplan run --apply-recommendation --model ./my-model --data train.jsonl --out runs/first
      vramplan run --schedule two-stage --model ./my-vlm --data captions.jsonl --out runs/vlm
    """
    from . import preflight  # every check before torch loads: nothing here imports it without a GPU driver
    from .commands import build_run, resolve_gpu_flags
    from .planner.plan_file import read_plan

    html_path = params.pop("html_path")
    allow_long = params.pop("allow_long_context")
    preflight.check_html(html_path)
    notes, extras = [], {}
    gpu_spec = resolve_gpu_flags(params.pop("gpu"), params.pop("gpu_mem"))
    model_dir, model_config = preflight.check_model_dir(params.pop("model"))
    preflight.check_data_file(params["data"])
    vlm_values = pop_vlm_flags(params)
    if vlm_flags_given(vlm_values) or is_vlm_config(model_config):  # vlm_run_cmd.py: stages, image-text data
        return run_vlm_command(ctx, params, vlm_values, model_dir, model_config, gpu_spec, html_path)
    target_gpu = gpu_spec or _detected_gpu(params["device"])
    plan, planned_seq = params.pop("plan"), False
    if plan:
        doc = read_plan(Path(plan))
        planned_seq = (doc.get("config") or {}).get("seq_len") is not None
        notes += check_plan_target(doc, plan, model_dir, target_gpu, params["force"])
        plan_notes, extras = apply_plan(ctx, params, doc, plan)
        notes += plan_notes
    for note in notes:  # before any refusal below: they say where the settings came from
        click.echo(f"note: {note}", err=True)
    gpus, strategy = params.pop("gpus"), params.pop("strategy")
    device = preflight.default_device(params["device"])
    if gpus != 1 or strategy is not None:  # after the plan: its gpus and strategy count too
        from .calibrate.trainer.distributed import check_launch

        check_launch(gpus, strategy, device, params["resume"], params["auto_fallback"])
    params.pop("apply_recommendation")
    method = params.pop("method")
    run = build_run(options_from_kwargs(params), method, target_gpu)
    if params["merge"] and run.has_adapter and not run.method_record.adapter.mergeable:
        raise ConfigError(f"--merge: {run.method_record.title} adapters have a nonlinearity and cannot be merged into the base weights; leave --merge out (the adapter saves and reloads on its own)")
    run, spec = _preflight_run(ctx, run, model_dir, model_config, planned_seq, allow_long, device, params)
    out = Path(params["out"]) if params["out"] else Path("runs") / f"{model_dir.resolve().name}-{run.method}"
    preflight.check_out_dir(out, params["resume"], preflight.output_bytes(spec, run, merge=params["merge"]))
    from .calibrate.store_check import check_store

    check_store(params["db"], write=True)
    from .quiet import quiet_libraries

    quiet_libraries(lambda message: click.echo(message, err=True), progress=not params["no_progress"])
    from .calibrate.trainer.loop import TrainConfig, train

    config = TrainConfig(
        model_path=model_dir, data_path=Path(params["data"]), out_dir=out, run=run, grad_accum=params["grad_accum"],
        learning_rate=params["lr"], epochs=params["epochs"], max_steps=params["max_steps"], save_every=params["save_every"],
        seed=params["seed"], device=params["device"], gpu=gpu_spec, db=params["db"], resume=params["resume"],
        force=params["force"], auto_fallback=params["auto_fallback"], skip_bad_rows=params["skip_bad_rows"],
        merge=params["merge"], progress=not params["no_progress"], log=lambda message: click.echo(message, err=True),
        command="vramplan " + " ".join(shlex.quote(arg) for arg in sys.argv[1:]), **extras,
    )
    if gpus > 1:  # one process per device, each calling train(); rank 0 prints the summary
        from .calibrate.trainer.distributed import launch

        status = launch(config, gpus, strategy, device)
        if status != 0:
            ctx.exit(status)
    else:
        _summary(train(config), params["db"])
    if html_path is not None:
        from .commands import wrote
        from .reports.html_report import write_report
        from .reports.html_sections import run_page

        wrote(html_path, write_report(html_path, run_page(out, params["db"]), "--html"))


def _preflight_run(ctx, run, model_dir, model_config, planned_seq, allow_long, device, params):
    """The run against the model (context window, bounds) and, on CPU, against the RAM; (run, spec)."""
    from dataclasses import replace

    from . import preflight
    from .planner.inventory import spec_from_path

    given = _typed(ctx, "seq_len") or planned_seq
    forced = given and params["force"] and not allow_long  # --force starts what would be refused, and says so
    seq_len, note, window = preflight.sequence_length(run.seq_len, given, model_config, str(model_dir), allow_long or forced)
    if forced and window is not None and run.seq_len > window.tokens:
        note = f"--seq-len {run.seq_len} is beyond the model's context window ({window.tokens:,} tokens); starting anyway (--force)"
    if note:
        click.echo(f"note: {note}", err=True)
        run = replace(run, seq_len=seq_len)
    spec, _ = spec_from_path(model_dir)
    preflight.check_run(spec, run)
    if run.loss == "fused":  # Liger Kernel's fused loss: refused where it cannot run, before any model loads
        from .calibrate.trainer.chunked_loss import fused_problem

        if (problem := fused_problem()) is not None:
            raise ConfigError(problem)
    if device == "cpu":
        note = preflight.check_cpu_ram(spec, run, params["force"])
        if note:
            click.echo(f"note: {note}", err=True)
    return run, spec


def _summary(result, db) -> None:
    from .calibrate.trainer.fallback import format_bytes

    r = result
    first, last = (r.losses[r.start_step], r.losses[-1]) if len(r.losses) > r.start_step else (None, None)
    click.echo(f"trained steps {r.start_step} -> {r.steps} of {r.total_steps} ({r.run.method}, batch {r.run.batch} x {r.grad_accum}, seq-len {r.run.seq_len})")
    if first is not None:
        eval_text = f"; eval loss {r.eval_loss:.4f}" if r.eval_loss is not None else ""
        click.echo(f"loss {first:.4f} -> {last:.4f}{eval_text}; {r.tokens_per_s:,.0f} tokens/s")
    if r.peak_bytes:
        click.echo(f"peak {format_bytes(r.peak_bytes)} ({r.peak_statistic})")
    click.echo(f"saved {r.weights_dir}" + (f" and {r.merged_dir}" if r.merged_dir else ""))
    if r.record_ids:
        click.echo(f"recorded as run #{r.record_ids[-1]} in {db or 'the default store'}")
