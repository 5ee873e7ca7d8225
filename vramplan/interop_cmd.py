"""`--from FILE` (estimate, recommend) and `recommend --export KIND`: the command-line side of
`planner.interop`. Flags given on the command line win over the files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from .cli import RunOptions, _split
from .planner.errors import ConfigError

FROM_HELP = ("Read the run from another tool's config: axolotl or LLaMA-Factory YAML, a TRL/TrainingArguments JSON or YAML, "
             "a PEFT adapter_config.json, a torchtune recipe or an accelerate config (repeat to combine; flags given win).")


def from_option(func):
    return click.option("--from", "from_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path), help=FROM_HELP)(func)


def _typed_flags(options: RunOptions | None, model, extra: dict) -> dict:
    from .commands import _typed

    typed = {}
    if options is not None:
        for name in RunOptions.__dataclass_fields__:
            if name != "method_options" and _typed(name):
                typed[name] = getattr(options, name)
        if "targets" in typed:
            typed["targets"] = _split((typed["targets"],))
    for name, value in extra.items():
        if _typed(name):
            typed[name] = value
    if model:
        typed["model"] = model
    return typed


def from_tool_configs(paths, model, gpu_spec, methods, options: RunOptions | None, gpus=1, strategy=None, offload="none"):
    """(model name, run, methods, parallel plan, imported, notes) of `--from` files with the flags over them.

    Raises:
        ConfigError: unreadable files, what the files ask for that no flag settles, no model.
    """
    from .commands import parse_methods
    from .planner.interop import read_tool_configs, run_from_imported
    from .planner.plan_file import parallel_plan

    imported = read_tool_configs(paths)
    typed = _typed_flags(options, model, {"gpus": gpus, "strategy": strategy, "offload": offload})
    chosen = parse_methods(methods) if methods else None
    result = run_from_imported(imported, typed, chosen[0] if chosen else None, gpu_spec is None or gpu_spec.bf16)
    run = result.run
    if options is not None and options.method_options:
        run = replace(run, method_options=options.method_options)
    name = model or imported.get("model")
    if not name:
        raise ConfigError(f"{', '.join(imported.files)} name no model; pass --model")
    notes = list(result.notes)
    parallel = None
    if result.strategy is not None and result.gpus > 1:
        parallel = parallel_plan(result.gpus, result.strategy, result.offload)
    elif result.strategy is not None and result.strategy != "ddp":
        notes.append(f"the files shard with {result.strategy}{'' if result.offload == 'none' else f' (offload {result.offload})'} "
                     "but do not say over how many GPUs (the launcher does): pass --gpus N for per-GPU figures; shown for one GPU")
    return name, run, chosen or (run.method,), parallel, imported, notes, result.grad_accum


def describe(imported, notes) -> list[str]:
    """Lines for people: where the settings came from and what was left out."""
    mapped = [m for m in imported.mapped]
    defaults = sum(1 for m in mapped if m.default)
    lines = [f"--from {', '.join(imported.files)}: {len({m.setting for m in mapped})} settings read "
             f"({defaults} from the tools' defaults), {len(imported.no_effect)} keys with no effect on memory"]
    if imported.not_understood:
        lines.append(f"  not understood (ignored): {', '.join(imported.not_understood)}")
    lines += [f"  not modelled: {item}" for item in imported.not_modelled]
    lines += [f"  note: {note}" for note in (*imported.notes, *notes)]
    return lines


def summary(imported, notes) -> dict:
    return {**imported.summary(), "notes": list(imported.notes) + list(notes)}


def write_export(kind: str, out: Path | None, plan: dict, dataset: Path | None, from_files) -> list[str]:
    """Write `plan` as a `kind` config to `out`; a `--from` file of the same tool keeps its other keys.

    Raises:
        ConfigError: no --out, or a setting the tool cannot express.
    """
    from .planner.interop import TOOLS, export_config, load_document

    if out is None:
        raise ConfigError(f"--export {kind} needs --out FILE (where to write the {kind} config)")
    base = next((Path(f) for f in from_files if TOOLS[kind].detect(load_document(Path(f)))), None)
    text, notes = export_config(kind, plan, str(dataset) if dataset else None, base)
    Path(out).write_text(text, encoding="utf-8")
    if base is not None:
        notes.insert(0, f"kept the keys of {base} that do not change memory")
    return notes


def recommend_inputs(from_files, model, seq_len, gpus):
    """What `recommend` takes from `--from` files: the model, the sequence length, the GPU count
    (flags given win), and the attention kernel, packing and loss it keeps; the rest is searched.

    Raises:
        ConfigError: unreadable files, or no model anywhere.
    """
    from .commands import _typed
    from .planner.interop import read_tool_configs

    imported = read_tool_configs(from_files)
    model = model or imported.get("model")
    if not model:
        raise ConfigError(f"{', '.join(imported.files)} name no model; pass --model")
    seq_len = seq_len or imported.get("seq_len")
    if not _typed("gpus") and imported.get("gpus"):
        gpus = int(imported.get("gpus"))
    fixed = {name: imported.get(name) for name in ("attention", "packing", "loss", "loss_chunk") if imported.get(name) is not None}
    kept = ", ".join(f"{name} {value}" for name, value in fixed.items())
    lines = [f"--from {', '.join(imported.files)}: model {model}, seq-len {seq_len or 'from --dataset or 2048'}"
             f"{f', {gpus} GPUs' if gpus > 1 else ''}{f', {kept}' if kept else ''}; the other settings are searched"]
    if imported.not_understood:
        lines.append(f"  not understood (ignored): {', '.join(imported.not_understood)}")
    return model, seq_len, gpus, fixed, lines


def export_methods(kind: str | None, methods: tuple[str, ...]) -> tuple[str, ...]:
    """Methods the advisor may pick when exporting to `kind`: those the tool can train (PEFT LoRA/DoRA, full)."""
    from .planner.interop.common import method_parts

    if kind is None:
        return methods
    kept = tuple(m for m in methods if method_parts(m)[0] in (None, "lora", "dora"))
    if not kept:
        raise ConfigError(f"--export {kind}: none of --method {','.join(methods)} is one {kind} trains (full, LoRA, QLoRA, DoRA, QDoRA)")
    return kept
