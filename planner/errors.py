"""Domain errors: one family, turned into a one-line `Error: ...` at the CLI boundary.

Each kind carries the exit code the CLI ends with (the table is in the README, "Exit codes"):
1 a wrong input, 3 does not fit, 4 a file cannot be read or written, 5 busy (try again later),
6 training failed, 130 interrupted.
"""


class VramplanError(Exception):
    """A user-facing problem: the message says what was wrong and what to do next."""

    exit_code = 1
    kind = "input"


class UnknownModelError(VramplanError):
    """The model name, alias, size or path does not resolve to a model."""


class UnknownGpuError(VramplanError):
    """The GPU key is not in the catalog (or is ambiguous)."""


class ConfigError(VramplanError, ValueError):
    """A run setting is impossible (rank 0, batch -1, unknown optimizer, ...)."""


class ResourceError(VramplanError):
    """The run does not fit what the machine has (GPU memory, RAM, disk space)."""

    exit_code = 3
    kind = "does-not-fit"


class FileAccessError(VramplanError):
    """An input or output location cannot be used: read-only, full, no permission, missing folder."""

    exit_code = 4
    kind = "file-access"


class BusyError(VramplanError):
    """Something else holds what is needed (a locked store, a run in progress); retrying later works."""

    exit_code = 5
    kind = "busy"


class TrainingFailed(VramplanError):
    """Training started and then failed; the run is recorded and its folder marked."""

    exit_code = 6
    kind = "training-failed"
