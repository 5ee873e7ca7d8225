"""Every estimator change is checked against the measurements that ship with vramplan.

The stores under calibrate/data were written by `vramplan calibrate` (provenance in each row);
this re-estimates every stored run with the current model and holds it to the targets.
"""

import shutil
import statistics
from pathlib import Path

import pytest

from vramplan.calibrate.report import error_rows
from vramplan.calibrate.store import Store
from vramplan.planner.methods import METHODS

DATA = Path(__file__).resolve().parents[1] / "calibrate" / "data"
# per method (median, worst) |error| %, and the median over all runs: the project's targets
# (cpu-measured 2 / 5, traced at full size 3 / 8)
BOUNDS = {"cpu": (2.0, 5.0, 2.0), "trace": (3.0, 8.0, 3.0)}


def _open_copy(path: Path, tmp_path: Path) -> Store:
    """Open a copy: shipped measurements are never touched, not even by a WAL switch."""
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    return Store.open(copy)


def _rows(name, tmp_path):
    path = DATA / name
    assert path.exists(), f"{path} is missing: it ships with vramplan"
    with _open_copy(path, tmp_path) as store:
        return [row for row in error_rows(store.runs(), current=True) if row["outcome"] == "ok"]


@pytest.mark.parametrize("name,source", [("cpu-standard.db", "cpu"), ("trace-standard.db", "trace")])
def test_current_model_against_stored_measurements(name, source, tmp_path):
    rows = _rows(name, tmp_path)
    assert len(rows) >= 20
    median_bound, worst_bound, overall_bound = BOUNDS[source]
    by_method = {}
    for row in rows:
        assert row["source"] == source
        by_method.setdefault(row["method"], []).append(abs(row["error_pct"]))
    # VLM rows are grouped by method, family and stage ("lora qwen2_vl stage 1"): same bounds per group
    assert set(METHODS) <= set(by_method)  # every registered method is measured
    assert set(by_method) - set(METHODS) == {group for group in by_method if " stage " in group}
    assert statistics.median(abs(row["error_pct"]) for row in rows) <= overall_bound
    for method, errors in by_method.items():
        assert statistics.median(errors) <= median_bound, (method, sorted(errors))
        assert max(errors) <= worst_bound, (method, sorted(errors))


def test_stored_runs_carry_their_provenance(tmp_path):
    rows = []
    for path in sorted(DATA.glob("*.db")):
        with _open_copy(path, tmp_path) as store:
            rows += store.runs()
    assert rows
    for run in rows:
        assert run.environment["libraries"]["torch"] and run.environment["stack"] == run.stack
        assert run.command and run.command.startswith("vramplan calibrate")
        assert run.created_at and run.est_peak_allocated_bytes > 0


def _cuda_table_lines(tmp_path) -> list[str]:
    """The README's CUDA table, recomputed from the shipped store with the current model: every
    row, then the rows free of an earlier run's leftover (calibrate/cuda_leftovers.py)."""
    import collections

    from vramplan.calibrate.cuda_leftovers import is_clean
    from vramplan.calibrate.fit import estimate_for
    from vramplan.planner.overhead import Corrections

    with _open_copy(DATA / "cuda-h200.db", tmp_path) as store:
        rows = store.runs(outcome="ok")
    every, clean = collections.defaultdict(list), collections.defaultdict(list)
    for run in rows:
        breakdown = estimate_for(run, Corrections())
        error = (breakdown.peak_allocated_bytes / run.peak_allocated_bytes - 1) * 100
        key = (run.run_config["method"], run.run_config["grad_ckpt"])
        every[key].append(error)
        if is_clean(run, breakdown):
            clean[key].append(error)

    def cells(errors):
        return f"{statistics.median(errors):+.1f} % | {max(errors, key=abs):+.1f} %" if errors else "- | -"

    return [
        f"| {method} | {'on' if ckpt else 'off'} | {len(errors)} | {cells(errors)} | {len(clean[(method, ckpt)])} | {cells(clean[(method, ckpt)])} |"
        for (method, ckpt), errors in sorted(every.items())
    ]


def test_the_cuda_store_is_real_gpu_data_and_the_readme_publishes_its_error(tmp_path):
    with _open_copy(DATA / "cuda-h200.db", tmp_path) as store:
        runs = store.runs()
    assert len(runs) >= 200
    for run in runs:
        assert run.source == "cuda" and run.device_name == "NVIDIA H200"
        assert run.environment["driver"] and run.environment["cuda_runtime"] and run.environment["libraries"]["bitsandbytes"]
    readme = (DATA.parents[1] / "README.md").read_text()
    for line in _cuda_table_lines(tmp_path):
        assert line in readme, line
