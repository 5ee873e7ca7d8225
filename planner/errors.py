"""Domain errors: one family, turned into a one-line `Error: ...` at the CLI boundary."""


class VramplanError(Exception):
    """A user-facing problem: the message says what was wrong and what to do next."""


class UnknownModelError(VramplanError):
    """The model name, alias, size or path does not resolve to a model."""


class UnknownGpuError(VramplanError):
    """The GPU key is not in the catalog (or is ambiguous)."""


class ConfigError(VramplanError, ValueError):
    """A run setting is impossible (rank 0, batch -1, unknown optimizer, ...)."""
