"""Mixtral: Mistral's attention (no q/k norm) and a sparse MLP of `num_local_experts` experts
(transformers 5 `modeling_mixtral.py`): fused 3-D experts like OLMoE's (no `block_sparse_moe.experts.N.w1`
Linears any more), and a router whose softmax runs on an fp32 copy of the logits and whose top-k
weights stay fp32, renormalized in place."""

from .base import Family, MoeLayout
from .layouts import separate_attention

MIXTRAL = Family(
    model_type="mixtral",
    title="Mixtral",
    projections=separate_attention(),
    moe=MoeLayout(experts_key="num_local_experts", fp32_routing_weights=True),
    sliding_window_key="sliding_window",
    defaults=(("num_key_value_heads", 8), ("num_local_experts", 8), ("num_experts_per_tok", 2)),
)
