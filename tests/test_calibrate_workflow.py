"""calibrate/workflow.py: the matrix, measure-store-fit, and the error report, without the click command."""

import shutil
from pathlib import Path

import pytest
from vramplan.calibrate import runner, workflow
from vramplan.calibrate.store import Store
from vramplan.planner.errors import ConfigError

SHIPPED_CPU_STORE = Path(workflow.__file__).parent / "data" / "cpu-standard.db"


def test_select_matrix_keeps_what_the_filters_name():
    everything = workflow.select_matrix("cpu", "quick")
    kept = workflow.select_matrix("cpu", "quick", models=("probe-qwen3",), methods=("lora", "full"))
    assert kept and len(kept) < len(everything)
    assert {m for m, _ in kept} == {"probe-qwen3"} and {r.method for _, r in kept} == {"lora", "full"}
    with pytest.raises(ConfigError, match="left nothing to measure"):
        workflow.select_matrix("cpu", "quick", models=("nope",))


def test_run_matrix_stores_every_run_and_the_fit(tmp_path, monkeypatch):
    """The measurement itself is stubbed (test_calibrate_cli measures for real): an OOM is stored too."""

    def fake_measure(source, config, run, steps):
        if run.method == "full":
            raise MemoryError("out of memory")
        return {"steady_peak_bytes": 10_000_000, "steady_reserved_bytes": 11_000_000}

    monkeypatch.setattr(runner, "measure", fake_measure)
    matrix = workflow.select_matrix("cpu", "quick", models=("probe-qwen3",), methods=("full", "lora"))
    seen = []
    db = tmp_path / "runs.db"
    result = workflow.run_matrix(matrix, "cpu", 2, db, "test", before=lambda name, run: seen.append((name, run)))
    assert seen == matrix and result.runs == len(matrix)
    assert result.counts == {"ok": 1, "oom": 1, "error": 0} and result.store_path == db
    with Store.open(db) as store:
        assert sorted(r.outcome for r in store.runs()) == ["ok", "oom"]
    report = workflow.error_report(db)
    assert report.excluded == {"oom": 1} and len(report.rows) == 2


def test_error_report_of_the_shipped_store(tmp_path):
    db = tmp_path / "cpu.db"
    shutil.copy(SHIPPED_CPU_STORE, db)
    report = workflow.error_report(db)
    assert report.rows and report.summary
    assert all(row["source"] == "cpu" for row in report.rows)


def test_empty_store(tmp_path):
    with pytest.raises(ConfigError, match="holds no runs yet: run `vramplan calibrate` first"):
        workflow.error_report(tmp_path / "new.db")
    assert workflow.error_report(tmp_path / "new.db", allow_empty=True).rows == []
