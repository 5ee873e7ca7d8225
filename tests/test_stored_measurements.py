"""Every estimator change is checked against the measurements that ship with vramplan.

The stores under calibrate/data were written by `vramplan calibrate` (provenance in each row);
this re-estimates every stored run with the current model and holds it to the targets.
"""

import statistics
from pathlib import Path

import pytest

from vramplan.calibrate.report import error_rows
from vramplan.calibrate.store import Store

DATA = Path(__file__).resolve().parents[1] / "calibrate" / "data"
BOUNDS = {"cpu": (2.5, 8.0), "trace": (3.0, 8.0)}  # (median, worst) |error| %, per method


def _rows(name):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{path} not shipped")
    with Store.open(path) as store:
        return [row for row in error_rows(store.runs(), current=True) if row["outcome"] == "ok"]


@pytest.mark.parametrize("name,source", [("cpu-standard.db", "cpu"), ("trace-standard.db", "trace")])
def test_current_model_against_stored_measurements(name, source):
    rows = _rows(name)
    assert len(rows) >= 20
    median_bound, worst_bound = BOUNDS[source]
    by_method = {}
    for row in rows:
        assert row["source"] == source
        by_method.setdefault(row["method"], []).append(abs(row["error_pct"]))
    assert set(by_method) == {"full", "lora", "qlora", "dora", "qdora"}
    for method, errors in by_method.items():
        assert statistics.median(errors) <= median_bound, (method, sorted(errors))
        assert max(errors) <= worst_bound, (method, sorted(errors))


def test_stored_runs_carry_their_provenance():
    rows = []
    for path in sorted(DATA.glob("*.db")):
        with Store.open(path) as store:
            rows += store.runs()
    assert rows
    for run in rows:
        assert run.environment["libraries"]["torch"] and run.environment["stack"] == run.stack
        assert run.command and run.command.startswith("vramplan calibrate")
        assert run.created_at and run.est_peak_allocated_bytes > 0
