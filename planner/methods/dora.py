"""DoRA: LoRA plus a trainable magnitude per output feature (Liu et al. 2024; peft use_dora=True)."""

from .base import FROZEN
from .lora_adapter import DORA_ADAPTER
from .record import Method

DORA = Method(
    key="dora",
    title="DoRA",
    summary="LoRA with a trainable magnitude per output feature (peft use_dora=True)",
    base=FROZEN,
    adapter=DORA_ADAPTER,
    quality=1.2,  # DoRA's gains over LoRA are small and task-dependent: equal here, speed decides
    lr=1.5e-4,
    lr_reason="DoRA: lr a little below LoRA's, {lr:.1e}{size_note}",
    default=True,
)
