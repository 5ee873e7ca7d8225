"""DeepSeek-V2 (-Lite): multi-head latent attention and a sparse MLP with shared experts
(transformers 5 `modeling_deepseek_v2.py`).

Attention (MLA, V2-Lite's layout: no q LoRA): q_proj (H -> heads x (nope + rope)); kv_a_proj_with_mqa
(H -> kv_lora_rank + rope), whose latent part passes kv_a_layernorm into kv_b_proj (kv_lora_rank ->
heads x (nope + v)); o_proj (heads x v -> H). The first `first_k_dense_replace` layers hold a dense
MLP of `intermediate_size`; the others a router (fp32, softmax, top-k scaled by
`routed_scaling_factor`), fused experts of `moe_intermediate_size` and `n_shared_experts` shared
experts as one dense MLP. Those MLP Linears are added by `planner.mla`, not listed here: peft 0.21
maps the names gate_proj / up_proj / down_proj to the fused experts on this model type, so no
--targets reaches them.
"""

from .base import Family, MoeLayout, Projection

DEEPSEEK_V2 = Family(
    model_type="deepseek_v2",
    title="DeepSeek-V2",
    projections=(
        Projection("q_proj", "attention", "attention_in", ("hidden",), ("q",)),
        Projection("kv_a_proj_with_mqa", "attention", "attention_in", ("hidden",), ("kv_a",), "attention_bias", short="kv_a"),
        Projection("kv_b_proj", "attention", "kv_latent", ("kv_latent",), ("kv_b",), short="kv_b"),
        Projection("o_proj", "attention", "attn_out", ("attn_v",), ("hidden",), "attention_bias"),
    ),
    mla=True,
    moe=MoeLayout(
        experts_key="n_routed_experts",
        intermediate_key="moe_intermediate_size",
        fp32_routing_weights=True,
        router_fp32=True,
        shared_experts_key="n_shared_experts",
        dense_layers_key="first_k_dense_replace",
    ),
    # DeepseekV2Config's defaults (transformers 5.24)
    defaults=(
        ("n_routed_experts", 64), ("n_shared_experts", 2), ("first_k_dense_replace", 0), ("kv_lora_rank", 512),
        ("q_lora_rank", 1536), ("qk_nope_head_dim", 128), ("qk_rope_head_dim", 64), ("v_head_dim", 128),
        ("topk_method", "greedy"),
    ),
)
