"""Qwen3: Llama's layout plus an RMSNorm over head_dim on q and k."""

from .base import Family
from .layouts import gated_mlp, separate_attention

QWEN3 = Family(
    model_type="qwen3",
    title="Qwen3",
    projections=separate_attention(qkv_bias="attention_bias", o_bias="attention_bias") + gated_mlp(),
    qk_norm=True,
    defaults=(("num_key_value_heads", 32), ("head_dim", 128)),
)
