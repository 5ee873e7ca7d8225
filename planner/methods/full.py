"""Full fine-tuning: every parameter trains; gradients take the parameter dtype."""

from ..breakdown import BACKWARD, BACKWARD_END, OPTIMIZER, Term
from .shared import dense_base


def terms(model, run, dt, adapted):
    head = model.lm_head_params  # an untied lm_head's gradient is written first, the rest by the end
    rest = model.base_params - head
    grads = [
        Term("grads/trainable", rest * dt.weight_bytes, f"{rest:,} grads x {dt.weight_bytes} B", frozenset({BACKWARD_END, OPTIMIZER})),
    ]
    if head:
        grads.append(
            Term("grads/lm_head", head * dt.weight_bytes, "lm_head gradient, written at the start of backward", frozenset({BACKWARD, BACKWARD_END, OPTIMIZER}))
        )
    return [dense_base(model, dt), *grads]
