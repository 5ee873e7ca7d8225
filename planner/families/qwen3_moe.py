"""Qwen3-MoE: Qwen3's attention (per-head q/k RMSNorm) and a sparse MLP of experts
`moe_intermediate_size` wide (transformers 5 `modeling_qwen3_moe.py`).

Every layer is sparse here: configs with `mlp_only_layers` or `decoder_sparse_step` > 1
(dense layers in between) are refused by `planner.architectures`.
"""

from .base import Family, MoeLayout
from .layouts import separate_attention

QWEN3_MOE = Family(
    model_type="qwen3_moe",
    title="Qwen3-MoE",
    projections=separate_attention(qkv_bias="attention_bias", o_bias="attention_bias"),
    qk_norm=True,
    moe=MoeLayout(experts_key="num_experts", intermediate_key="moe_intermediate_size"),
    defaults=(("num_key_value_heads", 4), ("num_experts", 128), ("num_experts_per_tok", 8)),
)
