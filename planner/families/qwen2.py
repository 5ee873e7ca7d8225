"""Qwen2 / Qwen2.5: Llama's layout with a bias on q, k and v (only)."""

from .base import Family
from .layouts import gated_mlp, separate_attention

QWEN2 = Family(
    model_type="qwen2",
    title="Qwen2",
    # Qwen2Attention hard-codes bias=True on q/k/v and bias=False on o, whatever the config says
    projections=separate_attention(qkv_bias=True) + gated_mlp(),
    defaults=(("num_key_value_heads", 32),),
)
