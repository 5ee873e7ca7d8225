"""LoRA: frozen 16/32-bit base, trainable low-rank A/B on the target modules (Hu et al. 2021)."""

from .base import FROZEN
from .lora_adapter import LORA_ADAPTER
from .record import Method

LORA = Method(
    key="lora",
    title="LoRA",
    summary="frozen 16-bit base, low-rank A/B on the target Linears (peft LoraConfig)",
    base=FROZEN,
    adapter=LORA_ADAPTER,
    quality=1.2,
    lr_reason="LoRA: lr {lr:.0e}{size_note}",
    default=True,
)
