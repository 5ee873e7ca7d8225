"""Model families, one record each, keyed by config.json's `model_type`.

A new family is one module here (a `Family` record, composed from `layouts` where it can)
and one line in `FAMILIES`; the planner and the calibration model builder both read it.
"""

from __future__ import annotations

from .base import DIMS, INPUT_GROUPS, LINEAR_GROUPS, Family, MoeLayout, Projection
from .deepseek_v2 import DEEPSEEK_V2
from .gemma import GEMMA
from .gemma2 import GEMMA2
from .gemma3_text import GEMMA3_TEXT
from .gpt_oss import GPT_OSS
from .llama import LLAMA
from .mistral import MISTRAL
from .mixtral import MIXTRAL
from .olmoe import OLMOE
from .phi3 import PHI3
from .qwen2 import QWEN2
from .qwen3 import QWEN3
from .qwen3_moe import QWEN3_MOE

FAMILIES: dict[str, Family] = {
    "llama": LLAMA,
    "mistral": MISTRAL,
    "qwen2": QWEN2,
    "qwen3": QWEN3,
    "gemma2": GEMMA2,
    "phi3": PHI3,
    "olmoe": OLMOE,
    "qwen3_moe": QWEN3_MOE,
    "mixtral": MIXTRAL,
    "gemma": GEMMA,
    "gemma3_text": GEMMA3_TEXT,
    "deepseek_v2": DEEPSEEK_V2,
    "gpt_oss": GPT_OSS,
}


def family_of(model_type: str | None) -> Family | None:
    """The record of a model_type, or None when no family module describes it."""
    return FAMILIES.get(model_type or "")


__all__ = ["DIMS", "FAMILIES", "INPUT_GROUPS", "LINEAR_GROUPS", "Family", "MoeLayout", "Projection", "family_of"]
