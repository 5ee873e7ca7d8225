"""Mistral: Llama's layout, never a bias; 8 kv heads unless the config says otherwise."""

from .base import Family
from .layouts import gated_mlp, separate_attention

MISTRAL = Family(
    model_type="mistral",
    title="Mistral",
    projections=separate_attention() + gated_mlp(),  # MistralAttention/MLP hard-code bias=False
    sliding_window_key="sliding_window",  # 4096 in Mistral-7B-v0.1, null from v0.2 on
    defaults=(("num_key_value_heads", 8),),
)
