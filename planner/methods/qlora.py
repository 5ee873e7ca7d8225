"""QLoRA: NF4 base (bitsandbytes Linear4bit) with LoRA adapters (Dettmers et al. 2023)."""

from .base import NF4
from .lora_adapter import LORA_ADAPTER
from .record import Method

QLORA = Method(
    key="qlora",
    title="QLoRA",
    summary="4-bit NF4 base (bitsandbytes) with LoRA adapters",
    base=NF4,
    adapter=LORA_ADAPTER,
    quality=1.1,  # a 4-bit base adds quantization noise
    lr_reason="QLoRA: lr {lr:.0e}{size_note}",
    default=True,
)
