"""LoRA: frozen 16/32-bit base, trainable low-rank A/B on the target modules."""

from .shared import adapter_terms, dense_base


def terms(model, run, dt, adapted):
    return [dense_base(model, dt), *adapter_terms(model, run, dt, adapted)]
