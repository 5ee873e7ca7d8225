"""Fault injection: read-only and full output locations, kill -9 mid-run and mid-calibration, a locked
store, concurrent writers, and every kind of damaged file.

Each test asserts the exact error line, the exit code, and that nothing stored was lost (the
store's earlier runs are still there, damaged files are left byte for byte). Read-only and full
disks are real tmpfs mounts where the tests run as root, and an `OSError`-raising fixture
otherwise (and always, for the read-only case).
"""

import errno
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.test_store import record
from tests.test_trainer import RUN_FLAGS, make_rows, make_tokenizer, tiny_llama_config, write_jsonl
from vramplan.calibrate.resume import record_key
from vramplan.calibrate.store import Store
from vramplan.cli import cli

ROOT = Path(__file__).resolve().parents[1]
READ_ONLY = "the file system is read-only; write to a folder on a writable disk"
# a `vramplan` process whose stderr ends by saying whether torch was ever imported
CLI = (
    "import sys\n"
    "from vramplan.cli import cli\n"
    "try:\n"
    "    cli(sys.argv[1:], prog_name='vramplan')\n"
    "finally:\n"
    "    print('torch loaded' if 'torch' in sys.modules else 'torch not loaded', file=sys.stderr)\n"
)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert lines, result.output
    assert "Traceback" not in result.output
    return lines[-1]


def seeded_store(path: Path) -> Path:
    """A store holding one run already: whatever fails later must leave it there."""
    with Store.open(path) as store:
        store.add_run(record(model_name="seed"))
    return path


def stored_names(path: Path) -> list[str]:
    with Store.open(path) as store:
        return [r.model_name for r in store.runs()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A config-only tiny llama (random init) with its tokenizer, and 60 rows of data."""
    root = tmp_path_factory.mktemp("faults")
    tokenizer = make_tokenizer()
    tiny_llama_config(len(tokenizer)).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return {"model": root / "model", "data": write_jsonl(root / "train.jsonl", make_rows())}


# ---------------------------------------------------------------- read-only and full locations
def _mount_tmpfs(folder: Path, options: str) -> bool:
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode == 0


def _unmount(folder: Path) -> None:
    import gc

    gc.collect()  # a store connection a failed assertion left open would keep the mount busy
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture(params=["tmpfs", "oserror"])
def readonly(request, tmp_path, monkeypatch):
    """A folder nothing can be written to; `prepare` puts files there first (a store, say)."""
    folder = tmp_path / "ro"
    folder.mkdir()

    def prepare(make=lambda folder: None):
        if request.param == "tmpfs":
            make(folder)
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
            return folder
        make(folder)
        real_open = os.open
        from vramplan.planner import files

        def no_write(path, flags, *args, **kwargs):
            if str(path).startswith(str(folder)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *args, **kwargs)

        def no_write_open(path, mode="r", *args, **kwargs):
            if str(path).startswith(str(folder)) and any(c in mode for c in "wax+"):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return open(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "open", no_write)
        monkeypatch.setattr(files, "open", no_write_open, raising=False)
        return folder

    if request.param == "tmpfs" and not _mount_tmpfs(folder, "size=1m"):
        pytest.skip("a tmpfs mount needs root; the oserror flavour covers this")
    yield prepare
    if request.param == "tmpfs":
        _unmount(folder)


@pytest.mark.parametrize("command", [
    ("estimate", "--model", "8b", "--gpu", "t4", "--html", "{ro}/p.html"),
    ("recommend", "--model", "8b", "--gpu", "t4", "--out", "{ro}/plan.yaml"),
    ("recommend", "--model", "8b", "--gpu", "t4", "--html", "{ro}/p.html"),
    ("report", "--model", "8b", "--gpu", "t4", "--out", "{ro}/r.html"),
    ("calibrate", "--report", "--db", "{store}", "--html", "{ro}/p.html"),
])
def test_read_only_output_is_one_line_before_the_work(command, readonly, tmp_path):
    ro = readonly()
    store = seeded_store(tmp_path / "runs.db")
    args = [a.format(ro=ro, store=store) for a in command]
    flag = args[-2]
    result = invoke(*args)
    assert result.exit_code == 4, result.output
    assert error_line(result) == f"Error: {flag}: cannot write in {ro}: {READ_ONLY}"
    assert list(ro.iterdir()) == [] and stored_names(store) == ["seed"]


def test_run_refuses_read_only_locations_in_well_under_a_second(readonly, tiny, tmp_path):
    ro = readonly(lambda folder: seeded_store(folder / "runs.db"))
    base = ["run", "--model", tiny["model"], "--data", tiny["data"], *RUN_FLAGS]
    cases = [
        (["--out", ro / "out", "--db", tmp_path / "runs.db"], f"Error: --out: cannot write in {ro}: {READ_ONLY}"),
        (["--out", tmp_path / "out", "--db", ro / "runs.db"], f"Error: --db {ro / 'runs.db'}: cannot write in {ro}: {READ_ONLY}"),
        (["--out", tmp_path / "out", "--db", ro / "new.db"], f"Error: --db {ro / 'new.db'}: cannot write in {ro}: {READ_ONLY}"),
        (["--out", tmp_path / "out", "--db", tmp_path / "runs.db", "--html", ro / "run.html"], f"Error: --html: cannot write in {ro}: {READ_ONLY}"),
    ]
    for extra, expected in cases:
        started = time.perf_counter()
        result = invoke(*base, *extra)
        assert time.perf_counter() - started < 1.0
        assert result.exit_code == 4 and error_line(result) == expected, result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs.db").exists()
    assert sorted(p.name for p in ro.iterdir()) == ["runs.db"] and stored_names(ro / "runs.db") == ["seed"]


def test_calibrate_refuses_a_read_only_store_before_measuring(readonly):
    ro = readonly()
    result = invoke("calibrate", "--device", "cpu", "--db", ro / "new.db")
    assert result.exit_code == 4
    assert error_line(result) == f"Error: --db {ro / 'new.db'}: cannot write in {ro}: {READ_ONLY}"


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (root only)."""
    folder = tmp_path / "small"
    folder.mkdir()
    if not _mount_tmpfs(folder, "size=64k"):
        pytest.skip("a tmpfs mount needs root; test_disk_full_mid_write_removes_the_temporary_file covers the rest")
    yield folder
    _unmount(folder)


def test_a_full_disk_is_refused_before_the_work(small_disk):
    result = invoke("estimate", "--model", "8b", "--gpu", "t4", "--html", small_disk / "p.html")
    assert result.exit_code == 4
    assert re.fullmatch(rf"Error: --html: {re.escape(str(small_disk))} has \d+\.\d KiB free but about 5\.7 MiB will be written; "
                        "free some space or choose another location", error_line(result))
    assert list(small_disk.iterdir()) == []


def test_a_disk_that_fills_during_the_write_leaves_nothing_behind(small_disk, monkeypatch):
    from vramplan.planner import files

    monkeypatch.setattr(files, "free_bytes", lambda path: 10**9)  # the disk fills after the check
    page = small_disk / "p.html"
    result = invoke("estimate", "--model", "8b", "--gpu", "t4", "--html", page)
    assert result.exit_code == 4
    assert error_line(result).startswith(f"Error: --html {page}: no space left on the device")
    assert error_line(result).endswith("; free some space or write to another disk")
    assert list(small_disk.iterdir()) == []  # no *.tmp left


def test_disk_full_mid_write_removes_the_temporary_file(tmp_path, monkeypatch):
    from vramplan.planner import files

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    plan = tmp_path / "plan.yaml"
    plan.write_text("the previous plan\n")
    result = invoke("recommend", "--model", "8b", "--gpu", "t4", "--out", plan)
    assert result.exit_code == 4
    assert error_line(result).startswith(f"Error: --out {plan}: no space left on the device")
    assert plan.read_text() == "the previous plan\n" and sorted(p.name for p in tmp_path.iterdir()) == ["plan.yaml"]


# ---------------------------------------------------------------- an unusable store, fast and torch-free
@pytest.mark.parametrize("kind", ["garbage", "newer", "locked", "html folder missing"])
def test_run_with_an_unusable_store_fails_in_under_a_second_without_torch(kind, tiny, tmp_path):
    db = seeded_store(tmp_path / "runs.db")
    extra = []
    holder = None
    if kind == "garbage":
        db = tmp_path / "garbage.db"
        db.write_bytes(b"garbage" * 100)
    elif kind == "newer":
        connection = sqlite3.connect(db)
        connection.execute("PRAGMA user_version = 99")
        connection.commit()
        connection.close()
    elif kind == "locked":
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
    else:
        extra = ["--html", tmp_path / "missing" / "run.html"]
    args = ["run", "--model", tiny["model"], "--data", tiny["data"], "--out", tmp_path / "out", "--db", db, *extra]
    started = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", CLI, *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    seconds = time.perf_counter() - started
    if holder is not None:
        holder.execute("ROLLBACK")
        holder.close()
    expected = {
        "garbage": (1, f"Error: {db} is not a readable vramplan store (not an SQLite file); nothing was changed: move it aside or pass another --db path"),
        "newer": (1, f"Error: {db} has schema v99, newer than this vramplan (v2): upgrade vramplan"),
        "locked": (5, f"Error: {db} is locked by another process; retry when it finishes, or pass another --db path"),
        "html folder missing": (1, f"Error: --html {tmp_path / 'missing' / 'run.html'}: the folder {tmp_path / 'missing'} does not exist"),
    }[kind]
    lines = child.stderr.splitlines()
    assert (child.returncode, lines[-2]) == expected, child.stderr
    assert lines[-1] == "torch not loaded" and "Traceback" not in child.stderr
    assert seconds < 3.0  # ~0.3 s on an idle core; the bound leaves room for a busy test machine
    assert not (tmp_path / "out").exists()
    if kind in ("locked", "html folder missing"):
        assert stored_names(db) == ["seed"]


def test_locked_store_is_busy_for_calibrate_and_still_readable(tmp_path):
    db = seeded_store(tmp_path / "runs.db")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.perf_counter()
        result = invoke("calibrate", "--device", "cpu", "--db", db)
        assert time.perf_counter() - started < 2.0
        assert result.exit_code == 5
        assert error_line(result) == f"Error: {db} is locked by another process; retry when it finishes, or pass another --db path"
        assert stored_names(db) == ["seed"]  # WAL: readers are not blocked by a writer
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert stored_names(db) == ["seed"]


def test_four_concurrent_writers_lose_nothing(tmp_path):
    db = tmp_path / "runs.db"  # not there yet: the four also race to create it
    script = (
        "import sys\n"
        "from vramplan.calibrate.store import Store\n"
        "from tests.test_store import record\n"
        "with Store.open(sys.argv[1]) as store:\n"
        "    for i in range(25):\n"
        "        store.add_run(record(model_name=f'{sys.argv[2]}-{i}'))\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", script, str(db), f"w{n}"], cwd=ROOT) for n in range(4)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]
    names = stored_names(db)
    assert len(names) == 100 and len(set(names)) == 100


# ---------------------------------------------------------------- kill -9, then resume / re-run
SLOW_RUN = (  # the real CLI, with each optimizer step slowed so the kill lands mid-run
    "import sys, time\n"
    "from vramplan.calibrate.trainer import loop\n"
    "step = loop._Session._step\n"
    "loop._Session._step = lambda self, *a, **k: (time.sleep(0.3), step(self, *a, **k))[1]\n"
    "from vramplan.cli import cli\n"
    "cli(sys.argv[1:], prog_name='vramplan')\n"
)


def _wait_for(condition, seconds: float, child) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert child.poll() is None, "the child ended before the kill"
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


@pytest.mark.slow
def test_kill_9_during_run_then_resume(tiny, tmp_path):
    out, db = tmp_path / "out", seeded_store(tmp_path / "runs.db")
    args = ["run", "--model", tiny["model"], "--data", tiny["data"], "--out", out, "--db", db, "--max-steps", 8,
            "--save-every", 1, "--lr", "0.01", "--no-progress", *RUN_FLAGS]
    child = subprocess.Popen([sys.executable, "-c", SLOW_RUN, *map(str, args)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (out / "checkpoints" / "step-000003" / "trainer_state.pt").is_file(), 180, child)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    marker = json.loads((out / "vramplan-run.json").read_text())
    assert marker["status"] == "running" and marker["pid"] == child.pid  # killed: no handler ran
    assert stored_names(db) == ["seed"]  # a run is recorded when it ends; the store is intact

    again = invoke(*args)
    step = marker["step"]
    assert error_line(again) == (
        f"Error: --out {out} already holds a run (status running, its process is gone, step {step}): "
        "pass --resume to continue it, or another --out for a new run"
    )
    resumed = invoke(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    start = int(re.search(r"trained steps (\d+) -> 8 of 8", resumed.output).group(1))
    assert start >= 3  # from the newest complete checkpoint (the marker may be a step behind it)
    assert json.loads((out / "vramplan-run.json").read_text())["status"] == "finished"
    with Store.open(db) as store:
        runs = store.runs()
    assert [r.model_name for r in runs][0] == "seed" and [r.outcome for r in runs] == ["ok", "ok"]
    assert runs[1].environment["trainer"]["start_step"] == start


FAKE_MEASURE = (  # the real CLI and store; only the measurement is a stand-in (0.3 s each), so the kill lands mid-matrix
    "import sys, time\n"
    "from vramplan.calibrate import runner\n"
    "def measure(source, config, run, steps):\n"
    "    time.sleep(0.3)\n"
    "    return {'steady_peak_bytes': 10**6 + run.rank * run.batch * run.seq_len}\n"
    "runner.measure = measure\n"
    "from vramplan.cli import cli\n"
    "cli(sys.argv[1:], prog_name='vramplan')\n"
)


def _fake_measure(source, config, run, steps):
    return {"steady_peak_bytes": 10**6 + run.rank * run.batch * run.seq_len}


def test_kill_9_during_calibrate_then_rerun_stores_every_config_once(tmp_path, monkeypatch):
    from vramplan.calibrate import runner
    from vramplan.calibrate.workflow import select_matrix

    db = tmp_path / "runs.db"
    args = ["calibrate", "--device", "cpu", "--preset", "quick", "--models", "probe-llama", "--db", db]
    matrix = select_matrix("cpu", "quick", ("probe-llama",))
    child = subprocess.Popen([sys.executable, "-c", FAKE_MEASURE, *map(str, args)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: db.exists() and len(stored_names(db)) >= 5, 120, child)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    with Store.open(db) as store:
        before = {r.id: record_key(r) for r in store.runs()}
    assert 5 <= len(before) < len(matrix)

    monkeypatch.setattr(runner, "measure", _fake_measure)
    rerun = invoke(*args)
    assert rerun.exit_code == 0, rerun.output
    done = len(before)
    assert f"{len(matrix) - done} runs: {len(matrix) - done} ok, 0 oom, 0 error" in rerun.output
    assert f"{done} configs already measured with this stack: skipped (--redo measures them again)" in rerun.output
    with Store.open(db) as store:
        runs = store.runs()
    keys = [record_key(r) for r in runs]
    assert len(keys) == len(matrix) == len(set(keys))  # every config exactly once
    assert {r.id: record_key(r) for r in runs if r.id in before} == before  # what the killed run stored is all there

    redo = invoke(*args, "--redo")
    assert f"{len(matrix)} runs: {len(matrix)} ok" in redo.output and "skipped" not in redo.output
    report = invoke("calibrate", "--report", "--db", db, "--json")
    rows = json.loads(report.output)
    assert len(rows) == len(matrix)  # the repeated measurements count once
    table = invoke("calibrate", "--report", "--db", db)
    assert f"{len(matrix)} repeated measurements of a config (the latest counts)" in " ".join(table.output.split())


# ---------------------------------------------------------------- every damaged file kind
def _truncated_store(path: Path) -> bytes:
    seeded_store(path)
    with Store.open(path) as store:
        for i in range(40):
            store.add_run(record(model_name=f"r{i}", environment={"pad": "x" * 2000}))
        store.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    return data[: len(data) // 2]


DAMAGED = {
    # kind: (file name, bytes or a maker, the command, exit code, the error line)
    "store: not SQLite": ("runs.db", b"garbage" * 100, ("calibrate", "--report", "--db", "{file}"), 1,
                          "Error: {file} is not a readable vramplan store (not an SQLite file); nothing was changed: move it aside or pass another --db path"),
    "store: cut in half": ("runs.db", _truncated_store, ("calibrate", "--report", "--db", "{file}"), 1,
                           "Error: {file} is not a readable vramplan store (database disk image is malformed); nothing was changed: move it aside or pass another --db path"),
    "plan: cut": ("plan.json", b'{"vramplan_plan": 1, "model": "8b", "gpu": nu', ("estimate", "--plan", "{file}"), 1,
                  "Error: --plan {file} is not valid JSON (Expecting value: line 1 column 44 (char 43)); write it again with `vramplan recommend ... --out FILE`"),
    "plan: not UTF-8": ("plan.yaml", b"model: caf\xe9\n", ("estimate", "--plan", "{file}"), 1,
                        "Error: --plan {file} is not UTF-8 text (byte 10); a plan is the JSON or YAML `vramplan recommend --out` writes"),
    "dataset: binary": ("data.jsonl", bytes(range(1, 256)), ("recommend", "--model", "8b", "--gpu", "t4", "--dataset", "{file}"), 1,
                        "Error: {file}:2: not UTF-8 text (invalid start byte); the data must be UTF-8"),
    "dataset: a cut line": ("data.jsonl", b'{"text": "a"}\n{"text": "b', ("recommend", "--model", "8b", "--gpu", "t4", "--dataset", "{file}"), 1,
                            "Error: {file}:2: Unterminated string starting at: line 1 column 10 (char 9)"),
    "config.json: cut": ("model/config.json", b'{"model_type": "llama", "hidden_si', ("estimate", "--model", "{file}"), 1,
                         "Error: {file} is not valid JSON (Unterminated string starting at: line 1 column 25 (char 24)); fix or re-download it"),
    "config.json: not UTF-8": ("model/config.json", b'{"model_type": "llama\xff"}', ("estimate", "--model", "{file}"), 1,
                               "Error: {file} is not valid JSON ('utf-8' codec can't decode byte 0xff in position 21: invalid start byte); fix or re-download it"),
    "run marker: cut": ("out/vramplan-run.json", b'{"format": "vramplan-run/1", "sta', ("report", "--model", "8b", "--gpu", "t4", "--out", "{tmp}/r.html", "--run", "{tmp}/out"), 1,
                        "Error: {file} is not readable (Unterminated string starting at: line 1 column 30 (char 29)); move the directory aside or pass another --out"),
    "run marker: foreign": ("out/vramplan-run.json", b'{"format": "other/1"}', ("report", "--model", "8b", "--gpu", "t4", "--out", "{tmp}/r.html", "--run", "{tmp}/out"), 1,
                            "Error: {file} is not a vramplan run marker; pass another --out"),
}


@pytest.mark.parametrize("kind", list(DAMAGED))
def test_damaged_files_are_one_line_and_left_as_they_are(kind, tmp_path):
    name, content, command, code, expected = DAMAGED[kind]
    file = tmp_path / name
    file.parent.mkdir(parents=True, exist_ok=True)
    data = content(file) if callable(content) else content
    file.write_bytes(data)
    result = invoke(*[a.format(file=file, tmp=tmp_path) for a in command])
    assert result.exit_code == code, result.output
    assert error_line(result) == expected.format(file=file, tmp=tmp_path)
    assert file.read_bytes() == data  # never "repaired", never reset
    assert not (tmp_path / "r.html").exists()


@pytest.mark.slow
def test_a_damaged_checkpoint_says_how_to_go_on(tiny, tmp_path):
    out, db = tmp_path / "out", seeded_store(tmp_path / "runs.db")

    def args(steps):
        return ["run", "--model", tiny["model"], "--data", tiny["data"], "--out", out, "--db", db, "--max-steps", steps,
                "--save-every", 1, "--no-progress", *RUN_FLAGS]

    assert invoke(*args(2)).exit_code == 0
    state = out / "checkpoints" / "step-000002" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    result = invoke(*args(4), "--resume")
    line = error_line(result)
    assert line.startswith(f"Error: checkpoint {state.parent} is damaged (")
    assert line.endswith("); delete that folder to resume from the checkpoint before it, or start again with another --out")
    assert result.exit_code == 1
    marker = json.loads((out / "vramplan-run.json").read_text())
    assert marker["status"] == "error" and "is damaged" in marker["message"]  # a final state, never `running`
    assert stored_names(db)[:2] == ["seed", str(tiny["model"].resolve())]  # nothing stored was lost


def test_a_checkpoint_cut_by_a_full_disk_leaves_no_half_folder(tmp_path, monkeypatch):
    import torch

    from vramplan.calibrate.trainer import checkpoint as ckpt

    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    kept = ckpt.save_checkpoint(tmp_path, model, optimizer, scheduler, {"step": 1})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.torch, "save", full)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path, model, optimizer, scheduler, {"step": 2})
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [kept.name]  # the last good one, nothing half-written
