"""Files written for people and for later commands: checked before the work, written whole or not at all.

Every OS error (read-only file system, disk full, permission, missing folder) becomes one
`FileAccessError` line that names the file and the fix; a failed write removes its temporary
file, so a full disk leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from .errors import ConfigError, FileAccessError

# errno -> (what happened, what to do); the fallback is the OS's own words
_OS_REASONS = {
    errno.EROFS: ("the file system is read-only", "write to a folder on a writable disk"),
    errno.ENOSPC: ("no space left on the device", "free some space or write to another disk"),
    errno.EDQUOT: ("the disk quota is used up", "free some space or write to another disk"),
    errno.EACCES: ("permission denied", "choose a location you can write to, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "choose a location you can write to, or fix its permissions"),
    errno.ENOENT: ("no such file or folder", "check the path; create the folder first (mkdir -p)"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "check the path"),
    errno.EISDIR: ("it is a folder", "give a file name inside it"),
    errno.ENAMETOOLONG: ("the name is too long", "use a shorter path"),
    errno.EMFILE: ("too many open files", "close other programs or raise the limit (ulimit -n)"),
    errno.EIO: ("an input/output error on the device", "check the disk (dmesg); write somewhere else"),
}


def os_reason(exc: OSError, where=None) -> tuple[str, str]:
    """(what happened, what to do) for an OS error, in words."""
    reason, fix = _OS_REASONS.get(exc.errno, (exc.strerror or str(exc), "check the path and try again"))
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) and where is not None:
        free = free_bytes(Path(str(where)))
        if free is not None:
            reason += f" ({_human(free)} free)"
    return reason, fix


def describe_os_error(exc: OSError, label: str | None = None) -> str:
    """One line for an OS error: which file (and the flag that named it), what happened, what to do."""
    where = exc.filename if exc.filename is not None else None
    reason, fix = os_reason(exc, where)
    if label and where is not None and str(where) not in label:
        prefix = f"{label} {where}"
    else:
        prefix = label or (str(where) if where is not None else "a file")
    return f"{prefix}: {reason}; {fix}"


def _human(n_bytes: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{n_bytes} bytes"


def existing_ancestor(path: Path) -> Path:
    """The nearest folder at or above `path` that exists (where a new file or folder would go)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int | None:
    """Free bytes on the disk that holds `path` (or its nearest existing folder); None if unknown."""
    try:
        return shutil.disk_usage(existing_ancestor(Path(path))).free
    except OSError:
        return None


def check_writable_dir(folder: Path, label: str, need_bytes: int = 0) -> None:
    """Create and remove a probe file in `folder`: catches read-only mounts and permissions, even for root.

    Raises:
        FileAccessError: the folder cannot be written, or has less than `need_bytes` free.
    """
    probe = Path(folder) / f".vramplan-write-check-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason, fix = os_reason(exc, folder)
        raise FileAccessError(f"{label}: cannot write in {folder}: {reason}; {fix}") from None
    free = free_bytes(folder)
    if need_bytes and free is not None and free < need_bytes:
        raise FileAccessError(
            f"{label}: {folder} has {_human(free)} free but about {_human(need_bytes)} will be written; "
            "free some space or choose another location"
        )


def check_output_file(path, label: str, need_bytes: int = 0, create_parents: bool = False) -> Path:
    """Refuse an output file that cannot be written, before any work is done.

    Args:
        path: the file to write.
        label: the flag that named it (`--html`, `--out`), for the error.
        need_bytes: roughly how much will be written (checked against the free space).
        create_parents: a missing folder will be created (checked where it would be made).

    Raises:
        ConfigError: the path is a folder, or its folder does not exist (unless `create_parents`).
        FileAccessError: the folder is not writable or too full.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{label} {path} is a directory; give a file name such as {path / 'report.html'}")
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{label} {path}: {folder} is a file, not a folder")
    if not folder.exists() and not create_parents:
        raise ConfigError(f"{label} {path}: the folder {folder} does not exist")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{label} {path} is not a regular file; give a file name")
    check_writable_dir(existing_ancestor(folder), label, need_bytes)
    return path


def atomic_write(path, data: bytes | str, label: str) -> int:
    """Write `data` to a temporary file beside `path`, then rename it into place; returns the bytes written.

    A failure (disk full, read-only, permission) removes the temporary file and leaves any
    previous `path` as it was.

    Raises:
        FileAccessError: the OS refused the write; the message says which file and what to do.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        exc.filename = str(path)
        raise FileAccessError(describe_os_error(exc, label)) from None
    return len(payload)
