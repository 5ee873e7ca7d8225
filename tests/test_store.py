"""The measurement store on a real SQLite file: round trip, migrations, WAL, bad files."""

import sqlite3
import subprocess
import sys

import pytest

from vramplan.calibrate.store import MIGRATIONS, RunRecord, Store, StoreError


def record(**overrides):
    values = dict(
        source="cpu", outcome="ok", model_name="tiny", model_config={"hidden_size": 64}, run_config={"method": "lora"},
        device_name="cpu", stack="torch=2.13", environment={"torch": "2.13"}, estimate={"weights/base": 10},
        est_peak_allocated_bytes=1000, peak_allocated_bytes=1010, phases={"forward": 900},
    )
    values.update(overrides)
    return RunRecord(**values)


def test_round_trip_and_schema_version(tmp_path):
    path = tmp_path / "m.db"
    with Store.open(path) as store:
        assert store.schema_version() == len(MIGRATIONS)
        run_id = store.add_run(record())
        store.add_run(record(outcome="oom", peak_allocated_bytes=None, error_message="CUDA out of memory"))
    with Store.open(path) as store:  # reopening migrates nothing and keeps everything
        runs = store.runs()
        assert [r.id for r in runs] == [run_id, run_id + 1]
        assert runs[0].run_config == {"method": "lora"} and runs[0].peak_allocated_bytes == 1010
        assert runs[1].outcome == "oom" and runs[1].error_message == "CUDA out of memory"
        assert store.runs(outcome="ok")[0].phases == {"forward": 900}
        assert store.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_corrupt_file_is_a_clear_error_and_left_untouched(tmp_path):
    path = tmp_path / "m.db"
    garbage = b"this is not sqlite" * 100
    path.write_bytes(garbage)
    with pytest.raises(StoreError, match="is not a readable vramplan store"):
        Store.open(path)
    assert path.read_bytes() == garbage


def test_foreign_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "other.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE notes (x)")
    connection.commit()
    connection.close()
    with pytest.raises(StoreError, match="not a vramplan store"):
        Store.open(path)


def test_locked_store_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "m.db"
    Store.open(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr("vramplan.calibrate.store.BUSY_TIMEOUT_MS", 200)
    store = Store.open(path)  # reading the schema version is allowed under WAL
    with pytest.raises(StoreError, match="locked by another process"):
        store.add_run(record())
    holder.execute("ROLLBACK")
    store.add_run(record())
    assert len(store.runs()) == 1


def test_killed_writer_loses_nothing_committed(tmp_path):
    path = tmp_path / "m.db"
    Store.open(path).close()
    script = (
        "import os\n"
        "from vramplan.calibrate.store import Store\n"
        "from tests.test_store import record\n"
        f"s = Store.open({str(path)!r})\n"
        "s.add_run(record())\n"
        "s.connection.execute('BEGIN IMMEDIATE')\n"
        "s.connection.execute(\"INSERT INTO runs (created_at, source, outcome, model_name, model_config, run_config, device_name, stack, environment, estimate, est_peak_allocated_bytes) VALUES ('x','cpu','ok','half','{}','{}','cpu','s','{}','{}',1)\")\n"
        "os._exit(9)  # killed mid-transaction\n"
    )
    subprocess.run([sys.executable, "-c", script], check=False)
    with Store.open(path) as store:
        names = [r.model_name for r in store.runs()]
    assert names == ["tiny"]
