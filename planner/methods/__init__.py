"""The method registry: one frozen record per fine-tuning method (see `record.Method`).

Adding a method is one module that defines its record plus one line here.
"""

from __future__ import annotations

from ..errors import ConfigError
from . import bottleneck
from .dora import DORA
from .full import FULL
from .lora import LORA
from .qdora import QDORA
from .qlora import QLORA
from .record import AdapterKind, BaseWeights, Method, MethodOption

METHODS: dict[str, Method] = {m.key: m for m in (FULL, LORA, QLORA, DORA, QDORA, *bottleneck.METHODS)}

METHOD_KEYS = tuple(METHODS)
DEFAULT_METHODS = tuple(key for key, m in METHODS.items() if m.default)


def method_record(key: str) -> Method:
    """The record of `--method key`.

    Raises:
        ConfigError: unknown key; the message lists the methods there are.
    """
    try:
        return METHODS[key]
    except KeyError:
        raise ConfigError(f"--method {key!r} is not one of: {', '.join(METHODS)}") from None


def method_options() -> tuple[MethodOption, ...]:
    """Every method-specific option once, in registry order (the CLI makes a flag of each)."""
    seen: dict[str, MethodOption] = {}
    for method in METHODS.values():
        for option in method.all_options:
            seen.setdefault(option.name, option)
    return tuple(seen.values())


def method_title(key: str) -> str:
    return METHODS[key].title if key in METHODS else key


__all__ = ["AdapterKind", "BaseWeights", "DEFAULT_METHODS", "METHODS", "METHOD_KEYS", "Method", "MethodOption", "method_options", "method_record", "method_title"]
