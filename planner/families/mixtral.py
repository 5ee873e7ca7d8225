"""Mixtral: Mistral's attention (no q/k norm) and a sparse MLP of `num_local_experts` experts
(transformers 5 `modeling_mixtral.py`)."""

from .base import Family, MoeLayout
from .layouts import separate_attention

MIXTRAL = Family(
    model_type="mixtral",
    title="Mixtral",
    projections=separate_attention(),
    moe=MoeLayout(experts_key="num_local_experts"),
    sliding_window_key="sliding_window",
    defaults=(("num_key_value_heads", 8), ("num_local_experts", 8), ("num_experts_per_tok", 2)),
)
