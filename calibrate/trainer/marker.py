"""The run marker (`OUT/vramplan-run.json`): this folder holds a run, its settings, its status.

Torch-free, so `vramplan run` checks its output folder before loading anything. A run's status
ends as `finished`, `error` (with `message`), `oom` or `interrupted`; `running` with a process
that is gone means it was killed (kill -9, power loss): `--resume` continues it.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from vramplan.planner.errors import BusyError, ConfigError, FileAccessError
from vramplan.planner.files import atomic_write, describe_os_error

MARKER = "vramplan-run.json"
FORMAT = "vramplan-run/1"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_marker(out_dir: Path) -> dict | None:
    file = Path(out_dir) / MARKER
    if not file.is_file():
        return None
    try:
        marker = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{file} is not readable ({exc}); move the directory aside or pass another --out") from None
    except OSError as exc:
        raise FileAccessError(describe_os_error(exc, "--out")) from None
    if not isinstance(marker, dict) or marker.get("format") != FORMAT:
        raise ConfigError(f"{file} is not a vramplan run marker; pass another --out")
    return marker


def write_marker(out_dir: Path, marker: dict) -> None:
    """Replace the marker whole (a temporary file renamed into place; removed if the write fails)."""
    marker = {**marker, "format": FORMAT, "updated_at": _now()}
    marker.setdefault("created_at", marker["updated_at"])
    atomic_write(Path(out_dir) / MARKER, json.dumps(marker, indent=2, sort_keys=True), "--out")


def owner() -> dict:
    """What `process_alive` needs to know who wrote a marker."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def process_alive(marker: dict) -> bool:
    """Whether the process that last wrote a `running` marker still runs (same host, not this process)."""
    pid = marker.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or pid == os.getpid():
        return False
    if marker.get("host") not in (None, socket.gethostname()):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def check_out_dir(out_dir: Path, resume: bool, allow: tuple[str, ...] = ()) -> dict | None:
    """Whether ``out_dir`` may be used, changing nothing; the marker of the run to resume (None: a fresh run).

    Raises:
        ConfigError: a file; it holds a run and ``resume`` is off; it holds other files; nothing to resume.
        BusyError: a run is in progress there.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a directory")
    marker = read_marker(out_dir) if out_dir.is_dir() else None
    if marker is not None and marker.get("status") == "running" and process_alive(marker):
        raise BusyError(f"--out {out_dir}: a run is in progress there (process {marker['pid']}); wait for it to finish, or use another --out")
    if marker is not None and not resume:
        status = marker.get("status", "?")
        gone = ", its process is gone" if status == "running" and marker.get("pid") else ""
        raise ConfigError(
            f"--out {out_dir} already holds a run (status {status}{gone}, step {marker.get('step', 0)}): "
            "pass --resume to continue it, or another --out for a new run"
        )
    if marker is None and out_dir.is_dir() and any(p.name not in allow for p in out_dir.iterdir()):
        raise ConfigError(f"--out {out_dir} is not empty and holds no vramplan run; give a new or empty directory")
    if marker is None and resume:
        raise ConfigError(f"--resume: {out_dir} holds no run to resume; drop --resume to start one there")
    return marker


def claim_out_dir(out_dir: Path, resume: bool, allow: tuple[str, ...] = ()) -> dict | None:
    """`check_out_dir`, then create the folder."""
    marker = check_out_dir(out_dir, resume, allow)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return marker
