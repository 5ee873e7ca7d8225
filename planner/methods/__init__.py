"""Weights and gradients per fine-tuning method: one module each, one signature.

`terms(model, run, dt, adapted) -> list[Term]` gives the method's weight and gradient terms;
optimizer states, activations and overheads are shared and live beside this package.
"""

from . import dora, full, lora, qdora, qlora

METHODS = {"full": full.terms, "lora": lora.terms, "qlora": qlora.terms, "dora": dora.terms, "qdora": qdora.terms}
