"""Full fine-tuning: every parameter trains; gradients and Adam states take the parameter dtype."""

from .base import TRAINABLE
from .record import Method

FULL = Method(
    key="full",
    title="Full",
    summary="every weight trains (gradients and optimizer states for all of them)",
    base=TRAINABLE,
    adapter=None,
    quality=2.0,
    lr=2e-5,
    lr_reason="full fine-tuning: lr ~2e-5 (larger steps destroy pretrained weights)",
    default=True,
)
