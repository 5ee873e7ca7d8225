"""An `Imported` (plus the flags given) as the RunConfig and multi-GPU plan to estimate."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..specs import RunConfig
from .common import FLAGS, Imported, method_for

RUN_FIELDS = ("rank", "alpha", "dropout", "targets", "batch", "grad_accum", "seq_len", "grad_ckpt", "optimizer", "precision",
              "attention", "double_quant", "adapter_dtype", "loss", "loss_chunk", "offload_activations", "packing")
VRAMPLAN_DEFAULTS = {"seq_len": 2048, "batch": 1}  # what a file may leave to the data


@dataclass(frozen=True)
class ImportedRun:
    run: RunConfig
    grad_accum: int
    strategy: str | None
    offload: str
    gpus: int
    notes: tuple[str, ...]


def _given(setting: str, typed: dict, method_given: bool) -> bool:
    """Whether a flag was given that settles `setting`."""
    return method_given if setting in ("adapter", "quantized") else typed.get(setting) is not None


def run_from_imported(imported: Imported, typed: dict, method: str | None = None, bf16_gpu: bool = True) -> ImportedRun:
    """The run the imported files describe, with the flags given (`typed`) put over them.

    Args:
        imported: what `read_tool_configs` returned.
        typed: RunConfig fields given as flags (they win), plus `strategy`/`offload`/`gpus`/`model` when given.
        method: `--method` when given (its first method); None: from the files.
        bf16_gpu: whether the GPU has bf16 (precision left to the GPU becomes bf16, else fp16).

    Raises:
        ConfigError: what the files ask for that the estimate cannot do and no flag overrides
            (each with the flag that would), or an impossible run.
    """
    problems = [message for setting, message in imported.problems if not _given(setting, typed, method is not None)]
    settings = imported.settings
    if method is None:
        adapter, quantized = settings.get("adapter"), bool(settings.get("quantized", False))
        method = method_for(adapter, quantized)
        if method is None and not any(setting in ("adapter", "quantized") for setting, _ in imported.problems):
            problems.append(f"no registered method has a {adapter or 'full'} adapter on a {'4-bit' if quantized else '16-bit'} base; pass --method")
    if problems:
        raise ConfigError("; ".join(problems))
    notes = []
    values = {name: settings[name] for name in RUN_FIELDS if settings.get(name) is not None}
    for name, default in VRAMPLAN_DEFAULTS.items():
        if name not in values and name not in typed:
            values[name] = default
            notes.append(f"{name}: not in {', '.join(imported.files)}; vramplan's default {default} ({FLAGS[name]} to change it)")
    values.update({name: value for name, value in typed.items() if name in RUN_FIELDS and value is not None})
    half = "bf16" if bf16_gpu else "fp16"  # what "auto" means: the GPU's 16-bit dtype
    if values.get("precision") is None:
        values["precision"] = half
    elif values["precision"] == "auto-mixed":
        values["precision"] = f"{half}-mixed"
    try:
        run = RunConfig(method=method, **values)
    except ConfigError as exc:
        raise ConfigError(f"{', '.join(imported.files)}: {exc}") from None
    strategy = typed.get("strategy", settings.get("strategy"))
    offload = typed.get("offload", settings.get("offload")) or "none"
    gpus = typed.get("gpus", settings.get("gpus")) or 1
    return ImportedRun(run, int(settings.get("grad_accum") or 1), strategy, offload, int(gpus), tuple(notes))
