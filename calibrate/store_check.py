"""Check a measurement store before the work that will write to it (or read it), in well under a second.

`vramplan run` and `vramplan calibrate` used to learn that their store was not SQLite, newer,
read-only or locked only when they recorded — after training. `check_store` opens nothing for
writing unless the file exists, never creates it, and waits at most `PREFLIGHT_WAIT_S` for a
lock: a vramplan writer holds one for milliseconds, so a longer wait means another program.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from vramplan.planner.files import check_writable_dir, existing_ancestor

from .store import MIGRATIONS, StoreBusyError, StoreError, _store_error, default_db_path

SQLITE_MAGIC = b"SQLite format 3\x00"
PREFLIGHT_WAIT_S = 0.5


def check_store(db, *, write: bool, must_exist: bool = False, flag: str = "--db") -> Path:
    """Refuse a store that cannot be used, without creating or changing anything.

    Args:
        db: the path given with `flag`, or None for the default store.
        write: the command will add runs (checks the file and its folder are writable, and the lock).
        must_exist: the command only reads: a missing file is an error.

    Returns:
        The path that will be used.

    Raises:
        StoreError: not a file, not SQLite, not a vramplan store, newer schema, missing (must_exist).
        StoreBusyError: another process holds the write lock.
        FileAccessError: the file or its folder cannot be written.
    """
    path = Path(db) if db is not None else default_db_path()
    label = f"{flag} {path}" if db is not None else f"the store {path}"
    if path.is_dir():
        raise StoreError(f"{label} is a directory; give a file path such as {path / 'measurements.db'}")
    if not path.exists():
        if must_exist:
            raise StoreError(f"the store {path} does not exist yet (it holds no runs): run `vramplan calibrate` first, or pass {flag} with the store it wrote")
        if write:  # created on the first record: its folder (or the nearest one that exists) must be writable
            check_writable_dir(existing_ancestor(path.parent), label)
        return path
    if not path.is_file():
        raise StoreError(f"{label} is not a regular file; give a file path such as measurements.db")
    with open(path, "rb") as handle:
        head = handle.read(len(SQLITE_MAGIC))
    if head and head != SQLITE_MAGIC:
        raise StoreError(f"{path} is not a readable vramplan store (not an SQLite file); nothing was changed: move it aside or pass another {flag} path")
    if write:
        check_writable_dir(path.parent, label)  # WAL keeps -wal and -shm files beside the store
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode={'rw' if write else 'ro'}", uri=True, timeout=PREFLIGHT_WAIT_S, isolation_level=None)
    except sqlite3.DatabaseError as exc:
        raise _store_error(path, exc) from None
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(f"{path} has schema v{version}, newer than this vramplan (v{len(MIGRATIONS)}): upgrade vramplan")
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "runs" not in tables:
            raise StoreError(f"{path} is an SQLite file but not a vramplan store; pass another {flag} path")
        if write:
            connection.execute("BEGIN IMMEDIATE")  # takes the write lock, or says who holds it
            connection.execute("ROLLBACK")
    except sqlite3.DatabaseError as exc:
        error = _store_error(path, exc)
        if isinstance(error, StoreBusyError):
            error = StoreBusyError(f"{path} is locked by another process; retry when it finishes, or pass another {flag} path")
        raise error from None
    finally:
        connection.close()
    return path
