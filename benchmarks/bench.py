"""`make bench`: cold CLI time and planner throughput, measured in one run.

Prints medians over repeats; quote the figures as ratios to their goals (cold CLI < 1 s,
sweep > 100,000 configs/s). With `--baseline-ref REF` the same sweep also runs against the code
at git REF (a temporary worktree, imported in a subprocess) and the ratio new/old is printed:
the cores are shared, so only figures from one run compare.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import vramplan
from vramplan.planner.catalog import catalog_spec
from vramplan.planner.estimator import estimate
from vramplan.planner.specs import RunConfig

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("vramplan")
CLI_REPEATS = 5
SWEEP_CONFIGS = 10_000
SWEEP_REPEATS = 5  # this machine's cores are shared: report the median and the best pass
SWEEP_GOAL = 100_000


def cold_cli_seconds() -> float:
    """Wall time of a fresh `vramplan estimate --model 8b --gpu t4` process (table, max batch/seq)."""
    times = []
    for _ in range(CLI_REPEATS):
        start = time.perf_counter()
        subprocess.run([str(CLI), "estimate", "--model", "8b", "--gpu", "t4"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sweep_configs() -> list[RunConfig]:
    """10,000 runs over fields every version of RunConfig has (the baseline's too)."""
    grid = itertools.product(
        ("full", "lora", "qlora", "dora", "qdora"),
        (4, 8, 16, 32, 64),
        (("attention",), ("all-linear",)),
        (1, 2, 4, 8),
        (512, 1024, 2048, 4096, 8192),
        (True, False),
        ("adamw", "paged-adamw-8bit"),
    )
    return [
        RunConfig(method=m, rank=r, targets=t, batch=b, seq_len=s, grad_ckpt=c, optimizer=o)
        for m, r, t, b, s, c, o in itertools.islice(itertools.cycle(grid), SWEEP_CONFIGS)
    ]


def sweep() -> dict:
    """Median and best throughput over SWEEP_REPEATS passes of the same 10,000 configs, and the
    median time to build them (RunConfig validates itself)."""
    model = catalog_spec("meta-llama/Meta-Llama-3-8B")
    rates, builds = [], []
    for _ in range(SWEEP_REPEATS):
        start = time.perf_counter()
        configs = sweep_configs()
        builds.append((time.perf_counter() - start) / len(configs))
        start = time.perf_counter()
        for run in configs:
            _ = estimate(model, run).breakdown.device_used_bytes  # the full statistic chain, as the CLI uses it
        rates.append(len(configs) / (time.perf_counter() - start))
    return {"median": statistics.median(rates), "best": max(rates), "build_us": statistics.median(builds) * 1e6}


def baseline_sweep(ref: str) -> dict:
    """`sweep()` against the code at git `ref`: a worktree, and a package dir that shadows the
    editable install (`vramplan/` copied, `planner`, `calibrate`, `reports` linked into it)."""
    with tempfile.TemporaryDirectory(prefix="vramplan-bench-") as tmp:
        tree, package = Path(tmp) / "tree", Path(tmp) / "pkg" / "vramplan"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), ref], check=True)
        try:
            shutil.copytree(tree / "vramplan", package)
            for name in ("planner", "calibrate", "reports"):
                (package / name).symlink_to(tree / name, target_is_directory=True)
            result = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--sweep-only", "--expect-package", str(package)],
                env={**os.environ, "PYTHONPATH": str(package.parent)},
                cwd=tmp,
                check=True,
                stdout=subprocess.PIPE,  # its errors go to the terminal
                text=True,
            )
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", help="git ref to run the same sweep against, e.g. e802755")
    parser.add_argument("--sweep-only", action="store_true", help="print the sweep's figures as JSON (the baseline's subprocess)")
    parser.add_argument("--expect-package", help="with --sweep-only: fail unless vramplan is imported from here")
    args = parser.parse_args()
    if args.sweep_only:
        imported = Path(vramplan.__file__).resolve().parent
        if args.expect_package and imported != Path(args.expect_package).resolve():
            sys.exit(f"vramplan imported from {imported}, not {args.expect_package}")
        print(json.dumps(sweep()))
        return

    cli = cold_cli_seconds()
    new = sweep()
    print(f"cold CLI `vramplan estimate --model 8b --gpu t4`: {cli:.3f} s median of {CLI_REPEATS} (goal < 1 s: {cli / 1.0:.2f}x of budget)")
    print(
        f"planner sweep: {new['median']:,.0f} configs/s median of {SWEEP_REPEATS} passes over {SWEEP_CONFIGS:,} configs, "
        f"best {new['best']:,.0f} (goal > {SWEEP_GOAL:,}/s: {new['median'] / SWEEP_GOAL:.2f}x goal)"
    )
    if args.baseline_ref:
        old = baseline_sweep(args.baseline_ref)
        print(f"baseline {args.baseline_ref}: {old['median']:,.0f} configs/s median, best {old['best']:,.0f}; new/old = {new['median'] / old['median']:.2f}x")
        print(f"RunConfig construction: {new['build_us']:.2f} us each, baseline {old['build_us']:.2f} us; new/old time = {new['build_us'] / old['build_us']:.2f}x")


if __name__ == "__main__":
    main()
