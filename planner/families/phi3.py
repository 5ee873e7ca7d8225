"""Phi-3: fused projections, qkv_proj (q, k and v in one Linear) and gate_up_proj."""

from .base import Family, Projection

PHI3 = Family(
    model_type="phi3",
    title="Phi-3",
    projections=(
        Projection("qkv_proj", "attention", "attention_in", ("hidden",), ("q", "kv", "kv")),
        Projection("o_proj", "attention", "attn_out", ("q",), ("hidden",)),
        Projection("gate_up_proj", "mlp", "mlp_in", ("hidden",), ("intermediate", "intermediate")),
        Projection("down_proj", "mlp", "mlp_prod", ("intermediate",), ("hidden",)),
    ),
    sliding_window_key="sliding_window",  # 2047 in Phi-3-mini-4k: a 2048-token run gets the explicit mask
)
