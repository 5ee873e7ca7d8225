"""Gemma (1): Llama's layout with a GeGLU MLP, tied embeddings, head_dim 256 and a fp32 (1 + w) norm scale;
no soft-caps, no sliding window, and an SDPA path (transformers 5 `modeling_gemma.py`)."""

from .base import Family
from .layouts import gated_mlp, separate_attention

GEMMA = Family(
    model_type="gemma",
    title="Gemma",
    projections=separate_attention(qkv_bias="attention_bias", o_bias="attention_bias") + gated_mlp(),
    norm_scale_fp32=True,  # GemmaRMSNorm: (x̂ * (1 + w.float())).type_as(x)
    # GemmaConfig's defaults (those of gemma-7b): 16 kv heads, head_dim 256 (2B: 8 heads x 256 on a 2048 stream)
    defaults=(("num_key_value_heads", 16), ("head_dim", 256), ("tie_word_embeddings", True)),
)
