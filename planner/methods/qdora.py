"""QDoRA: DoRA adapters on an NF4 base."""

from .shared import adapter_terms, quantized_base


def terms(model, run, dt, adapted):
    return [*quantized_base(model, run, dt), *adapter_terms(model, run, dt, adapted)]
