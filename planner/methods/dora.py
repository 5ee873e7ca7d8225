"""DoRA: LoRA plus a trainable magnitude per output feature (peft use_dora=True)."""

from .shared import adapter_terms, dense_base


def terms(model, run, dt, adapted):
    return [dense_base(model, dt), *adapter_terms(model, run, dt, adapted)]
