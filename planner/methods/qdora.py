"""QDoRA: DoRA adapters on an NF4 base."""

from .base import NF4
from .lora_adapter import DORA_ADAPTER
from .record import Method

QDORA = Method(
    key="qdora",
    title="QDoRA",
    summary="DoRA adapters on a 4-bit NF4 base",
    base=NF4,
    adapter=DORA_ADAPTER,
    quality=1.1,
    lr=1.5e-4,
    lr_reason="QDoRA: lr a little below LoRA's, {lr:.1e}{size_note}",
)
