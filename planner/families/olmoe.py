"""OLMoE: Llama's attention with RMSNorms over the full q and k widths, and a sparse MLP
(router `mlp.gate`, fused experts `mlp.experts`; transformers 5 `modeling_olmoe.py`)."""

from .base import Family, MoeLayout
from .layouts import separate_attention

OLMOE = Family(
    model_type="olmoe",
    title="OLMoE",
    projections=separate_attention(qkv_bias="attention_bias", o_bias="attention_bias"),
    qk_norm=True,
    qk_norm_full=True,
    moe=MoeLayout(experts_key="num_experts"),
    defaults=(("num_experts", 64), ("num_experts_per_tok", 8)),
)
