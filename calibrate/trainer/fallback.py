"""Stepping a run down when it does not fit: before it starts (the estimate) and on OOM.

The order keeps what is learned the same for as long as possible: first a smaller micro-batch
with more gradient accumulation (same effective batch, same result up to rounding), then
gradient checkpointing (same result, slower), and only then shorter sequences (longer rows get
cut: the data changes).
"""

from __future__ import annotations

from dataclasses import replace

from vramplan.planner.errors import ConfigError
from vramplan.planner.estimator import estimate
from vramplan.planner.specs import GpuSpec, ModelSpec, RunConfig

MIN_SEQ_LEN = 128  # below this the run is no longer the run that was asked for


class DoesNotFitError(ConfigError):
    """The estimate says the run needs more memory than the device has."""

    exit_code = 3  # the exit code of `ResourceError`: does not fit
    kind = "does-not-fit"


def _smaller_batch(batch: int) -> int:
    """The largest divisor of ``batch`` at most half of it: the effective batch stays exact."""
    for candidate in range(batch // 2, 0, -1):
        if batch % candidate == 0:
            return candidate
    return 1


def next_config_down(run: RunConfig, grad_accum: int) -> tuple[RunConfig, int, str] | None:
    """The next smaller config, with the flags that give it; None when nothing is left to shrink.

    >>> next_config_down(RunConfig(batch=4), 2)[1:]
    (4, '--batch 2 --grad-accum 4 (half the micro-batch, same effective batch 8)')
    """
    if run.batch > 1:
        batch = _smaller_batch(run.batch)
        accum = grad_accum * (run.batch // batch)
        reason = f"--batch {batch} --grad-accum {accum} (half the micro-batch, same effective batch {batch * accum})"
        return replace(run, batch=batch, grad_accum=accum), accum, reason
    if not run.grad_ckpt:
        return replace(run, grad_ckpt=True), grad_accum, "--grad-ckpt (gradient checkpointing: same result, ~30% slower)"
    if run.seq_len // 2 >= MIN_SEQ_LEN:
        seq_len = run.seq_len // 2
        return replace(run, seq_len=seq_len), grad_accum, f"--seq-len {seq_len} (rows longer than {seq_len} tokens are cut)"
    return None


def format_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def _needed(spec: ModelSpec, run: RunConfig, gpu: GpuSpec) -> int:
    return estimate(spec, run, gpu).breakdown.device_used_bytes


def _smallest(spec: ModelSpec, run: RunConfig, grad_accum: int, gpu: GpuSpec) -> tuple[RunConfig, bool]:
    """The first config down the chain that fits (True), or the last one when none does (False)."""
    while (down := next_config_down(run, grad_accum)) is not None:
        run, grad_accum, _ = down
        if _needed(spec, run, gpu) <= gpu.total_bytes:
            return run, True
    return run, False


def check_fits(
    spec: ModelSpec, run: RunConfig, grad_accum: int, gpu: GpuSpec | None, force: bool = False, auto_fallback: bool = False
) -> tuple[RunConfig, int, list[str]]:
    """Refuse a run whose estimate exceeds ``gpu`` (None: a CPU run, nothing to check).

    Returns the run to train (stepped down with ``auto_fallback``), its gradient accumulation and
    notes for the user.

    Raises:
        DoesNotFitError: it does not fit, and neither ``force`` nor ``auto_fallback``; or no
            config down the chain fits.
    """
    if gpu is None:
        return run, grad_accum, []
    notes: list[str] = []
    label = gpu.name if gpu.key == "custom" else f"{gpu.name} ({format_bytes(gpu.total_bytes)})"
    while (needed := _needed(spec, run, gpu)) > gpu.total_bytes:
        what = f"estimated {format_bytes(needed)} does not fit {label}"
        if force:
            return run, grad_accum, [*notes, f"{what}: starting anyway (--force)"]
        smallest, fits = _smallest(spec, run, grad_accum, gpu)
        if not fits:
            last = f"batch {smallest.batch}, checkpointing, seq-len {smallest.seq_len}"
            raise DoesNotFitError(f"{what}, and nothing smaller fits ({last}: {format_bytes(_needed(spec, smallest, gpu))}); "
                                  "use qlora, a smaller model or a larger GPU (or --force to start anyway)")
        run_down, accum_down, reason = next_config_down(run, grad_accum)
        if not auto_fallback:
            raise DoesNotFitError(f"{what}; try {reason}, or pass --auto-fallback to step down until it fits (or --force to start anyway)")
        run, grad_accum = run_down, accum_down
        notes.append(f"{what}: stepping down to {reason}")
    return run, grad_accum, notes
