"""The numbers behind a comparison page: one setting swept per method, and which models fit where.

The HTML report draws these; it never estimates itself. Everything here is the estimator run
over a small grid, with the same calibration the user's `estimate` would use.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .catalog import resolve_model
from .errors import VramplanError
from .estimator import estimate
from .specs import GpuSpec, ModelSpec, RunConfig

# (RunConfig field, axis label, values); the run's own value is always added
SWEEPS = (
    ("rank", "LoRA rank r", (4, 8, 16, 32, 64, 128, 256)),
    ("batch", "micro-batch size", (1, 2, 4, 8, 16, 32)),
    ("seq_len", "sequence length (tokens)", (256, 512, 1024, 2048, 4096, 8192, 16384)),
)
FIT_SIZES = ("1b", "3b", "8b", "14b", "32b", "70b")  # size shorthands -> catalog models (planner.catalog.models.SIZE_DEFAULTS)


@dataclass(frozen=True)
class Sweep:
    """Predicted device-used bytes per method as one setting moves (None where it is impossible)."""

    field: str
    label: str
    xs: tuple[int, ...]
    current: int
    series: dict[str, list[int | None]]  # method -> one value per x
    skipped: tuple[str, ...]  # methods the setting does not apply to (no rank)


def sweeps(spec: ModelSpec, run: RunConfig, methods, gpu: GpuSpec | None, corrections) -> list[Sweep]:
    """Each of SWEEPS for every method it applies to; sweeps with no possible point are left out."""
    out = []
    for field, label, values in SWEEPS:
        applies = [m for m in methods if field != "rank" or replace(run, method=m).uses_rank]
        if not applies:
            continue
        current = getattr(run, field)
        xs = tuple(sorted(set(values) | {current}))
        series = {method: [_device_used(spec, run, method, field, x, gpu, corrections) for x in xs] for method in applies}
        if any(p is not None for points in series.values() for p in points):
            out.append(Sweep(field, label, xs, current, series, tuple(m for m in methods if m not in applies)))
    return out


def _device_used(spec, run, method, field, value, gpu, corrections) -> int | None:
    try:
        return estimate(spec, replace(run, method=method, **{field: value}), gpu, corrections).breakdown.device_used_bytes
    except VramplanError:
        return None


def fit_models(spec: ModelSpec) -> list[ModelSpec]:
    """A handful of catalog models from 1B to 70B, plus `spec`, smallest first."""
    models: list[ModelSpec] = []
    for size in FIT_SIZES:
        candidate = resolve_model(size).spec
        if candidate.name not in [m.name for m in models]:
            models.append(candidate)
    if spec.name not in [m.name for m in models]:
        models.append(spec)
    return sorted(models, key=lambda m: m.base_params)


def fit_headroom(models, run: RunConfig, methods, gpus, corrections_by_gpu: dict) -> dict[tuple[int, str, str], int | None]:
    """(model index, GPU key, method) -> GPU memory minus predicted device used (None: impossible)."""
    headroom = {}
    for i, model in enumerate(models):
        for gpu in gpus:
            for method in methods:
                try:
                    headroom[(i, gpu.key, method)] = estimate(model, replace(run, method=method), gpu, corrections_by_gpu[gpu.key]).headroom_bytes
                except VramplanError:
                    headroom[(i, gpu.key, method)] = None
    return headroom
