"""`make bench`: cold CLI time and planner throughput, measured in one run.

Prints medians over repeats; quote the figures as ratios to their goals (cold CLI < 1 s,
sweep > 10,000 configs/s).
"""

from __future__ import annotations

import itertools
import statistics
import subprocess
import sys
import time
from pathlib import Path

from vramplan.planner.catalog import catalog_spec
from vramplan.planner.estimator import estimate
from vramplan.planner.specs import RunConfig

CLI = Path(sys.executable).with_name("vramplan")
CLI_REPEATS = 5
SWEEP_CONFIGS = 10_000
SWEEP_REPEATS = 5  # this machine's cores are shared: report the median and the best pass


def cold_cli_seconds() -> float:
    """Wall time of a fresh `vramplan estimate --model 8b --gpu t4` process (table, max batch/seq)."""
    times = []
    for _ in range(CLI_REPEATS):
        start = time.perf_counter()
        subprocess.run([str(CLI), "estimate", "--model", "8b", "--gpu", "t4"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sweep_configs_per_second() -> tuple[float, float]:
    """Median and best throughput over SWEEP_REPEATS passes of the same 10,000 configs."""
    model = catalog_spec("meta-llama/Meta-Llama-3-8B")
    grid = itertools.product(
        ("full", "lora", "qlora", "dora", "qdora"),
        (4, 8, 16, 32, 64),
        (("attention",), ("all-linear",)),
        (1, 2, 4, 8),
        (512, 1024, 2048, 4096, 8192),
        (True, False),
        ("adamw", "paged-adamw-8bit"),
    )
    configs = [
        RunConfig(method=m, rank=r, targets=t, batch=b, seq_len=s, grad_ckpt=c, optimizer=o)
        for m, r, t, b, s, c, o in itertools.islice(itertools.cycle(grid), SWEEP_CONFIGS)
    ]
    rates = []
    for _ in range(SWEEP_REPEATS):
        start = time.perf_counter()
        for run in configs:
            _ = estimate(model, run).breakdown.device_used_bytes  # the full statistic chain, as the CLI uses it
        rates.append(len(configs) / (time.perf_counter() - start))
    return statistics.median(rates), max(rates)


def main() -> None:
    cli = cold_cli_seconds()
    rate, best = sweep_configs_per_second()
    print(f"cold CLI `vramplan estimate --model 8b --gpu t4`: {cli:.3f} s median of {CLI_REPEATS} (goal < 1 s: {cli / 1.0:.2f}x of budget)")
    print(
        f"planner sweep: {rate:,.0f} configs/s median of {SWEEP_REPEATS} passes over {SWEEP_CONFIGS:,} configs, best {best:,.0f} "
        f"(goal > 10,000/s: {rate / 10_000:.2f}x goal)"
    )


if __name__ == "__main__":
    main()
