"""One error path: every failure ends as one `Error: ...` line (or, with --json, one JSON object on stdout).

Exit codes (also in the README, "Exit codes"):

    0   success
    1   a wrong input: a bad flag value, or a file (model config, plan, dataset, store) that cannot be used
    2   a usage error: unknown option or command, missing required option, a value not among the choices
    3   does not fit: the estimate exceeds the GPU or the RAM, or training ran out of memory
    4   a file cannot be read or written: read-only file system, disk full, permission, missing folder
    5   busy: the store is locked, or a run is in progress in --out; retry when it finishes
    6   training failed after it started (recorded in the store, the run folder marked)
    70  an unexpected error: a vramplan bug; the traceback is saved to a file the message names
    130 interrupted (Ctrl-C); a checkpoint was saved where there was progress
"""

from __future__ import annotations

import json
import os
import tempfile
import traceback

import click

from .planner.errors import VramplanError
from .planner.files import describe_os_error

EXIT_CODES = {
    0: "success",
    1: "a wrong input (flag value or file content)",
    2: "a usage error (unknown option, missing option, invalid choice)",
    3: "does not fit (GPU memory, RAM) or ran out of memory",
    4: "a file cannot be read or written (read-only, disk full, permission, missing folder)",
    5: "busy: a locked store or a run in progress; retry later",
    6: "training failed after it started",
    70: "an unexpected error (a vramplan bug)",
    130: "interrupted",
}
KINDS = {0: "ok", 1: "input", 2: "usage", 3: "does-not-fit", 4: "file-access", 5: "busy", 6: "training-failed", 70: "internal", 130: "interrupted"}


# a clause that starts with one of these is advice: "...; use --seq-len 4096 or less"
ADVICE_VERBS = {
    "use", "pass", "give", "run", "make", "choose", "write", "fix", "free", "retry", "lower", "create", "check", "drop",
    "move", "upgrade", "save", "convert", "continue", "resume", "try", "add", "see", "set", "leave", "delete", "install",
    "remove", "rename", "close", "raise", "re-download", "start", "wait", "please", "or", "mkdir",
}
DEFAULT_HINTS = {2: "run the command with --help to see its options", 70: "please report it with the command line"}


def split_hint(message: str) -> tuple[str, str | None]:
    """(what was wrong, what to do): the last clause after `; ` or `: ` that starts with advice, when there is one."""
    best = None
    for separator in ("; ", ": "):
        start = 0
        while (found := message.find(separator, start)) >= 0:
            word = message[found + len(separator):].split(" ", 1)[0].strip("`'\"(").lower()
            if word in ADVICE_VERBS and (best is None or found > best[0]):
                best = (found, separator)
            start = found + 1
    if best is None:
        return message, None
    return message[: best[0]], message[best[0] + len(best[1]):]


def error_document(message: str, exit_code: int) -> dict:
    """The JSON form of an error: {"error", "hint", "exit_code", "kind"}."""
    _, hint = split_hint(message)
    return {"error": message, "hint": hint or DEFAULT_HINTS.get(exit_code), "exit_code": exit_code, "kind": KINDS.get(exit_code, "error")}


class CliError(click.ClickException):
    """A one-line `Error: ...` with the exit code of its kind."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def fail(message: str, exit_code: int, as_json: bool):
    """End the command: JSON on stdout with --json, else `Error: ...` on stderr."""
    message = " ".join(message.split())  # one line, always
    if as_json:
        click.echo(json.dumps(error_document(message, exit_code)))
        raise click.exceptions.Exit(exit_code)
    raise CliError(message, exit_code)


def save_traceback(exc: BaseException) -> str | None:
    """Write the traceback of an unexpected error to a temporary file; its path, or None."""
    try:
        fd, path = tempfile.mkstemp(prefix="vramplan-traceback-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return path
    except OSError:
        return None


def handle(exc: BaseException, as_json: bool):
    """Turn any exception escaping a command into its one line and exit code (re-raises click's own)."""
    if isinstance(exc, VramplanError):
        fail(str(exc), exc.exit_code, as_json)
    if isinstance(exc, click.exceptions.Exit) or isinstance(exc, click.Abort):
        raise exc
    if isinstance(exc, click.ClickException):
        if as_json:
            fail(exc.format_message(), exc.exit_code, True)
        raise exc
    if isinstance(exc, KeyboardInterrupt):
        fail("interrupted", 130, as_json)
    if isinstance(exc, OSError):
        fail(describe_os_error(exc), 4, as_json)
    if isinstance(exc, MemoryError):
        fail("out of host memory (RAM): lower --batch or --seq-len, or use a machine with more RAM", 3, as_json)
    where = save_traceback(exc)
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    saved = f"the traceback is in {where}" if where else "no traceback could be saved"
    fail(f"unexpected {type(exc).__name__}: {first} (a vramplan bug); {saved}: please report it with the command line", 70, as_json)
