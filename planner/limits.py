"""The largest batch and sequence length that fit a GPU, by bisection on the estimator."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .estimator import Estimate, estimate
from .overhead import Corrections
from .specs import GpuSpec, ModelSpec, RunConfig

MAX_BATCH = 4096
MAX_SEQ_LEN = 1 << 20


def _largest(fits, upper: int) -> int:
    """Largest n in [1, upper] with fits(n), assuming fits is monotone; 0 when even 1 fails."""
    if not fits(1):
        return 0
    low, high = 1, 2
    while high <= upper and fits(high):
        low, high = high, high * 2
    high = min(high, upper + 1)
    while high - low > 1:
        mid = (low + high) // 2
        if fits(mid):
            low = mid
        else:
            high = mid
    return low


def max_batch(model: ModelSpec, run: RunConfig, gpu: GpuSpec, corrections: Corrections | None = None) -> int:
    """Largest micro-batch at `run.seq_len` whose device-used estimate fits `gpu`."""
    return _largest(lambda b: estimate(model, replace(run, batch=b), gpu, corrections).fits, MAX_BATCH)


def max_seq_len(model: ModelSpec, run: RunConfig, gpu: GpuSpec, corrections: Corrections | None = None) -> int:
    """Largest sequence length at `run.batch` that fits, rounded down to a multiple of 64."""
    fits = lambda blocks: estimate(model, replace(run, seq_len=blocks * 64), gpu, corrections).fits  # noqa: E731
    return 64 * _largest(fits, MAX_SEQ_LEN // 64)


@dataclass(frozen=True)
class MethodResult:
    """An estimate with the largest batch and sequence that fit (None without a GPU)."""

    estimate: Estimate
    max_batch: int | None
    max_seq_len: int | None


def compare_methods(
    model: ModelSpec,
    run: RunConfig,
    methods: tuple[str, ...],
    gpu: GpuSpec | None,
    corrections: Corrections | None = None,
) -> list[MethodResult]:
    """The same settings under each method, side by side."""
    results = []
    for method in methods:
        method_run = replace(run, method=method)
        result = estimate(model, method_run, gpu, corrections)
        if gpu is None:
            results.append(MethodResult(result, None, None))
        else:
            results.append(MethodResult(result, max_batch(model, method_run, gpu, corrections), max_seq_len(model, method_run, gpu, corrections)))
    return results
