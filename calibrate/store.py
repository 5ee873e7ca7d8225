"""The measurement store: one SQLite file, one row per run, versioned schema, WAL.

Every run keeps its environment, the full config, the estimate made before it ran, what was
measured, the outcome and where it came from. Nothing is ever reset silently: a corrupt or
locked file is a clear error that names the file and what to do.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..planner.errors import BusyError, FileAccessError, VramplanError

SOURCES = ("cuda", "cpu", "trace")
OUTCOMES = ("ok", "oom", "error")
BUSY_TIMEOUT_MS = 5000

MIGRATIONS = [
    # v1: runs and fitted calibrations
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('cuda', 'cpu', 'trace')),
        outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'oom', 'error')),
        error_message TEXT,
        model_name TEXT NOT NULL,
        model_config TEXT NOT NULL,
        run_config TEXT NOT NULL,
        device_name TEXT NOT NULL,
        device_total_bytes INTEGER,
        stack TEXT NOT NULL,
        environment TEXT NOT NULL,
        estimate TEXT NOT NULL,
        est_peak_allocated_bytes INTEGER NOT NULL,
        est_peak_reserved_bytes INTEGER,
        est_device_used_bytes INTEGER,
        peak_allocated_bytes INTEGER,
        peak_reserved_bytes INTEGER,
        device_used_bytes INTEGER,
        phases TEXT,
        categories TEXT,
        command TEXT,
        duration_s REAL
    );
    CREATE INDEX runs_by_device ON runs (device_name, stack, source);
    CREATE TABLE calibrations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at TEXT NOT NULL,
        device_name TEXT NOT NULL,
        stack TEXT NOT NULL,
        params TEXT NOT NULL,
        fitted_run_ids TEXT NOT NULL,
        validation TEXT NOT NULL
    );
    """,
    # v2: calibrations remember which GPU preset they belong to, so `estimate --gpu` can find them
    """
    ALTER TABLE calibrations ADD COLUMN gpu_key TEXT;
    CREATE INDEX calibrations_by_gpu ON calibrations (gpu_key, id);
    """,
]


class StoreError(VramplanError):
    """The store file cannot be used; the message says why and what to do."""


class StoreBusyError(StoreError, BusyError):
    """Another process holds the store's write lock; retrying later works."""


@dataclass(frozen=True)
class RunRecord:
    """One run as stored. Measured fields are None when the run did not get that far."""

    source: str
    outcome: str
    model_name: str
    model_config: dict
    run_config: dict
    device_name: str
    stack: str
    environment: dict
    estimate: dict
    est_peak_allocated_bytes: int
    est_peak_reserved_bytes: int | None = None
    est_device_used_bytes: int | None = None
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    device_used_bytes: int | None = None
    device_total_bytes: int | None = None
    phases: dict = field(default_factory=dict)
    categories: dict = field(default_factory=dict)
    error_message: str | None = None
    command: str | None = None
    duration_s: float | None = None
    id: int | None = None
    created_at: str | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source {self.source!r} is not one of {SOURCES}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r} is not one of {OUTCOMES}")


_JSON_FIELDS = ("model_config", "run_config", "environment", "estimate", "phases", "categories")


def default_db_path() -> Path:
    """Under the user's data directory (platformdirs), e.g. ~/.local/share/vramplan/measurements.db."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("vramplan", appauthor=False)) / "measurements.db"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Store:
    """A measurement store on one SQLite file. Open with `Store.open(path)`."""

    def __init__(self, connection: sqlite3.Connection, path: Path):
        self.connection = connection
        self.path = path

    @classmethod
    def open(cls, path: Path | str | None = None) -> "Store":
        """Open (creating and migrating as needed) the store.

        Raises:
            StoreError: the file is not a database, is corrupt, is locked, or is newer than this vramplan.
        """
        path = Path(path) if path is not None else default_db_path()
        if path.is_dir():
            raise StoreError(f"--db {path} is a directory; give a file path such as {path / 'measurements.db'}")
        path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                return cls._open_once(path)
            except StoreBusyError:
                # SQLite skips the busy handler when two connections both hold a shared lock and want to write
                # (e.g. racing to switch a new file to WAL): one gets SQLITE_BUSY at once, so wait and retry here.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02 + random.random() * 0.08)

    @classmethod
    def _open_once(cls, path: Path) -> "Store":
        connection = None
        try:
            connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            connection.row_factory = sqlite3.Row
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            store = cls(connection, path)
            store._migrate()
            return store
        except (sqlite3.DatabaseError, StoreError) as exc:
            if connection is not None:
                connection.close()
            error = _store_error(path, exc) if isinstance(exc, sqlite3.DatabaseError) else exc
            if isinstance(error, FileAccessError) and path.is_file():
                return cls._open_read_only(path, error)  # a store on a read-only disk can still be read
            raise error from None

    @classmethod
    def _open_read_only(cls, path: Path, error: StoreError) -> "Store":
        """Read a store where nothing can be written (writing then fails with `error`'s message)."""
        for query in ("mode=ro", "mode=ro&immutable=1"):  # immutable: not even the WAL index can be made
            connection = None
            try:
                connection = sqlite3.connect(f"{path.resolve().as_uri()}?{query}", uri=True, isolation_level=None)
                connection.row_factory = sqlite3.Row
                store = cls(connection, path)
                version = store.schema_version()
            except sqlite3.DatabaseError:
                if connection is not None:
                    connection.close()
                continue
            if version != len(MIGRATIONS):
                connection.close()
                raise error from None  # an older schema needs its migration written first
            return store
        raise error from None

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _transaction(self):
        try:
            self.connection.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.connection.execute("ROLLBACK")
                raise
            self.connection.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise _store_error(self.path, exc) from None

    def schema_version(self) -> int:
        return self.connection.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        version = self.schema_version()
        if version > len(MIGRATIONS):
            raise StoreError(f"{self.path} has schema v{version}, newer than this vramplan (v{len(MIGRATIONS)}): upgrade vramplan")
        if version == len(MIGRATIONS):
            return
        with self._transaction():  # one writer migrates; another process opening a new store waits, then finds it done
            version = self.schema_version()
            if version == 0:
                check = self.connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if check:
                    raise StoreError(f"{self.path} is an SQLite file but not a vramplan store; pass another --db path")
            for number in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        self.connection.execute(statement)
                self.connection.execute(f"PRAGMA user_version = {number + 1}")

    def add_run(self, record: RunRecord) -> int:
        """Insert one run in its own transaction; returns its id."""
        values = {name: getattr(record, name) for name in RunRecord.__dataclass_fields__ if name not in ("id", "created_at")}
        for name in _JSON_FIELDS:
            values[name] = json.dumps(values[name], sort_keys=True)
        values["created_at"] = record.created_at or _now()
        columns = ", ".join(values)
        marks = ", ".join(f":{name}" for name in values)
        with self._transaction():
            cursor = self.connection.execute(f"INSERT INTO runs ({columns}) VALUES ({marks})", values)
        return int(cursor.lastrowid)

    def runs(self, source: str | None = None, device_name: str | None = None, outcome: str | None = None) -> list[RunRecord]:
        clauses, args = [], []
        for column, value in (("source", source), ("device_name", device_name), ("outcome", outcome)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        try:
            rows = self.connection.execute(f"SELECT * FROM runs {where} ORDER BY id", args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise _store_error(self.path, exc) from None
        return [_record(row) for row in rows]

    def add_calibration(
        self, device_name: str, stack: str, params: dict, fitted_run_ids: list[int], validation: dict, gpu_key: str | None = None
    ) -> int:
        with self._transaction():
            cursor = self.connection.execute(
                "INSERT INTO calibrations (created_at, device_name, gpu_key, stack, params, fitted_run_ids, validation) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (_now(), device_name, gpu_key, stack, json.dumps(params), json.dumps(fitted_run_ids), json.dumps(validation)),
            )
        return int(cursor.lastrowid)

    def latest_calibration(self, gpu_key: str, stack: str | None = None) -> dict | None:
        """The newest calibration fitted on the GPU preset `gpu_key` (and `stack`, when given)."""
        query = "SELECT * FROM calibrations WHERE gpu_key = ?"
        args: list = [gpu_key]
        if stack is not None:
            query += " AND stack = ?"
            args.append(stack)
        try:
            row = self.connection.execute(query + " ORDER BY id DESC LIMIT 1", args).fetchone()
        except sqlite3.DatabaseError as exc:
            raise _store_error(self.path, exc) from None
        if row is None:
            return None
        return {**dict(row), "params": json.loads(row["params"]), "fitted_run_ids": json.loads(row["fitted_run_ids"]), "validation": json.loads(row["validation"])}


def _record(row: sqlite3.Row) -> RunRecord:
    values = dict(row)
    for name in _JSON_FIELDS:
        values[name] = json.loads(values[name]) if values[name] is not None else {}
    return RunRecord(**values)


def _store_error(path: Path, exc: sqlite3.DatabaseError) -> StoreError:
    message = str(exc)
    if "locked" in message or "busy" in message:
        return StoreBusyError(f"{path} is locked by another process (waited {BUSY_TIMEOUT_MS // 1000} s); retry when it finishes")
    if "not a database" in message or "malformed" in message or "corrupt" in message:
        return StoreError(f"{path} is not a readable vramplan store ({message}); nothing was changed: move it aside or pass another --db path")
    if "readonly" in message or "read-only" in message or "unable to open" in message:
        return _StoreAccessError(f"{path}: {message}: the store cannot be written there; pass --db in a folder you can write to")
    if "disk" in message and "full" in message:
        return _StoreAccessError(f"{path}: {message}: free some space or pass --db on another disk")
    return StoreError(f"{path}: {message}")


class _StoreAccessError(StoreError, FileAccessError):
    """The store's file or folder cannot be written (read-only, full, permission)."""
