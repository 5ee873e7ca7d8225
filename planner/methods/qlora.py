"""QLoRA: NF4 base (bitsandbytes Linear4bit) with LoRA adapters (Dettmers et al. 2023)."""

from .shared import adapter_terms, quantized_base


def terms(model, run, dt, adapted):
    return [*quantized_base(model, run, dt), *adapter_terms(model, run, dt, adapted)]
