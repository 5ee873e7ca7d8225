"""Byte units. GiB (2**30) and GB (10**9) are kept apart everywhere a number meets a person."""

import re

from .errors import ConfigError

GIB = 1 << 30
MIB = 1 << 20
GB = 10**9

_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(GIB|GB|MIB|MB|TIB|TB|G|M)?\s*$", re.IGNORECASE)
_UNIT_BYTES = {"GIB": GIB, "G": GIB, "GB": GB, "MIB": MIB, "M": MIB, "MB": 10**6, "TIB": 1 << 40, "TB": 10**12}


def gib(n_bytes: float) -> float:
    """Bytes to GiB."""
    return n_bytes / GIB


def format_gib(n_bytes: float, digits: int = 2) -> str:
    """Bytes as a GiB string, e.g. '14.96 GiB'."""
    return f"{n_bytes / GIB:.{digits}f} GiB"


def parse_size(text: str, flag: str = "--gpu-mem") -> int:
    """Parse '22GiB', '24GB', '80 G' (G means GiB) into bytes.

    Raises:
        ConfigError: when the text is not a positive size with a known unit.
    """
    match = _SIZE_RE.match(str(text))
    if not match or match.group(2) is None:
        raise ConfigError(
            f"{flag} {text!r} is not a memory size; write a number and a unit, e.g. 22GiB or 24GB"
        )
    value = float(match.group(1)) * _UNIT_BYTES[match.group(2).upper()]
    if value <= 0:
        raise ConfigError(f"{flag} {text!r} must be greater than zero")
    return int(value)
