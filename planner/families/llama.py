"""Llama (1, 2, 3.x), and the many models that reuse its layout (TinyLlama, Yi, ...)."""

from .base import Family
from .layouts import gated_mlp, separate_attention

LLAMA = Family(
    model_type="llama",
    title="Llama",
    # LlamaAttention / LlamaMLP read config.attention_bias and config.mlp_bias
    projections=separate_attention(qkv_bias="attention_bias", o_bias="attention_bias") + gated_mlp(bias="mlp_bias"),
)
