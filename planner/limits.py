"""The largest batch and sequence length that fit a GPU, by bisection on the estimator."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .estimator import Estimate, estimate
from .overhead import Corrections
from .sharding import ParallelPlan, shard
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


def estimate_per_gpu(
    model: ModelSpec, run: RunConfig, gpu: GpuSpec | None, corrections: Corrections | None = None, parallel: ParallelPlan | None = None
) -> tuple[Estimate, int]:
    """The estimate for one GPU (of `parallel.gpus` when given) and the host RAM offloading needs."""
    single = estimate(model, run, gpu, corrections)
    if parallel is None:
        return single, 0
    sharded = shard(single, parallel, corrections)
    return replace(single, breakdown=sharded.breakdown), sharded.host_bytes


def max_batch(model: ModelSpec, run: RunConfig, gpu: GpuSpec, corrections: Corrections | None = None, parallel: ParallelPlan | None = None) -> int:
    """Largest micro-batch (per GPU) at `run.seq_len` whose device-used estimate fits `gpu`."""
    return _largest(lambda b: estimate_per_gpu(model, replace(run, batch=b), gpu, corrections, parallel)[0].fits, MAX_BATCH)


def max_seq_len(model: ModelSpec, run: RunConfig, gpu: GpuSpec, corrections: Corrections | None = None, parallel: ParallelPlan | None = None) -> int:
    """Largest sequence length at `run.batch` that fits, rounded down to a multiple of 64."""
    fits = lambda blocks: estimate_per_gpu(model, replace(run, seq_len=blocks * 64), gpu, corrections, parallel)[0].fits  # noqa: E731
    return 64 * _largest(fits, MAX_SEQ_LEN // 64)


@dataclass(frozen=True)
class MethodResult:
    """An estimate with the largest batch and sequence that fit (None without a GPU)."""

    estimate: Estimate
    max_batch: int | None
    max_seq_len: int | None
    parallel: ParallelPlan | None = None  # when set, the estimate is for one GPU of parallel.gpus
    host_bytes: int = 0  # host RAM that offloading needs (per node)


def compare_methods(
    model: ModelSpec,
    run: RunConfig,
    methods: tuple[str, ...],
    gpu: GpuSpec | None,
    corrections: Corrections | None = None,
    parallel: ParallelPlan | None = None,
) -> list[MethodResult]:
    """The same settings under each method, side by side (per GPU under `parallel`)."""
    results = []
    for method in methods:
        method_run = replace(run, method=method)
        result, host = estimate_per_gpu(model, method_run, gpu, corrections, parallel)
        if gpu is None:
            results.append(MethodResult(result, None, None, parallel, host))
        else:
            limits = (max_batch(model, method_run, gpu, corrections, parallel), max_seq_len(model, method_run, gpu, corrections, parallel))
            results.append(MethodResult(result, *limits, parallel, host))
    return results
