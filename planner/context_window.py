"""The model's context window, and the sequence lengths that respect it.

A model is trained on sequences up to its context window; memory may allow longer ones, but
the model has never seen those positions. The window is `max_position_embeddings` (or the
field older configs use), stretched by RoPE scaling when the config declares it: linear,
dynamic-NTK, YaRN and LongRoPE multiply the original window by their factor; Llama-3's
`llama3` scaling is already counted in `max_position_embeddings`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

# where configs keep the window, in the order tried (GPT-2: n_positions, ChatGLM: seq_length, ...)
WINDOW_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx", "max_seq_len")
# RoPE scalings that stretch the original window by `factor`
STRETCHING = ("linear", "dynamic", "yarn", "longrope", "su")
ALLOW_FLAG = "--allow-long-context"


@dataclass(frozen=True)
class ContextWindow:
    tokens: int
    source: str  # how it was found, for people: "max_position_embeddings" or "... x rope_scaling yarn factor 4"


def _positive_int(value) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return int(value) if value >= 1 else None


def context_window(config: dict | None) -> ContextWindow | None:
    """The window a config.json declares, RoPE scaling included; None when it declares none."""
    if not isinstance(config, dict):
        return None
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else None
    for source in (config, text or {}):
        for key in WINDOW_KEYS:
            tokens = _positive_int(source.get(key))
            if tokens:
                return _scaled(source, tokens, key)
    return None


def _scaled(config: dict, tokens: int, key: str) -> ContextWindow:
    scaling = config.get("rope_scaling") or config.get("rope_parameters")
    if not isinstance(scaling, dict):
        return ContextWindow(tokens, key)
    kind = str(scaling.get("rope_type") or scaling.get("type") or "default")
    factor = scaling.get("factor")
    if kind not in STRETCHING or not isinstance(factor, (int, float)) or factor <= 1:
        return ContextWindow(tokens, key)
    original = _positive_int(scaling.get("original_max_position_embeddings")) or tokens
    stretched = int(original * factor)
    if stretched <= tokens:
        return ContextWindow(tokens, key)
    return ContextWindow(stretched, f"{original:,} x rope_scaling {kind} factor {factor:g}")


def check_seq_len(seq_len: int, window: ContextWindow | None, model_name: str, flag: str = "--seq-len", allow_long: bool = False) -> None:
    """Refuse a sequence longer than the model's context window, unless `allow_long`.

    Raises:
        ConfigError: `seq_len` is beyond the window; the message gives the window and both ways out.
    """
    if window is None or allow_long or seq_len <= window.tokens:
        return
    raise ConfigError(
        f"{flag} {seq_len} is beyond the context window of {model_name} ({window.tokens:,} tokens, {window.source}): "
        f"the model never saw longer sequences; use {flag} {window.tokens} or less, or pass {ALLOW_FLAG} to plan it anyway"
    )


def default_seq_len(default: int, window: ContextWindow | None) -> tuple[int, str | None]:
    """The default sequence length kept within the window; with a note when it had to be shortened."""
    if window is None or default <= window.tokens:
        return default, None
    return window.tokens, f"seq-len {window.tokens:,}: the model's context window ({window.source}); the default {default:,} is beyond it"


def cap_note(max_seq_len: int | None, window: ContextWindow | None, allow_long: bool) -> tuple[int | None, str | None]:
    """`max_seq_len` found by memory, capped at the window (with the reason), or marked as beyond it."""
    if max_seq_len is None or window is None or max_seq_len <= window.tokens:
        return max_seq_len, None
    if allow_long:
        return max_seq_len, f"max seq len {max_seq_len:,} is beyond the context window ({window.tokens:,} tokens, {window.source}) ({ALLOW_FLAG})"
    return window.tokens, (
        f"max seq len is capped at the context window, {window.tokens:,} tokens ({window.source}); memory alone would allow "
        f"{max_seq_len:,} ({ALLOW_FLAG} shows it)"
    )
