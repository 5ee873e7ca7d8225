"""DeepSeek-V2's multi-head latent attention (MLA) and its dense/shared-expert MLP Linears.

transformers 5 `DeepseekV2Attention` (V2-Lite: no q LoRA): q = q_proj(x) (heads x (nope + rope));
kv_a_proj_with_mqa(x) splits into the kv latent (kv_lora_rank), RMS-normed by kv_a_layernorm, and one
rotary key head (rope); kv_b_proj expands the latent to heads x (nope + v), whose v part goes to SDPA
as a view; k is a new tensor of nope + rope per head. So SDPA sees q and k of nope + rope and v of
v_head_dim per head, with as many kv heads as heads.
"""

from __future__ import annotations

from .errors import UnknownModelError
from .specs import LinearSpec, ModelSpec, RunConfig

FP32 = 4


def mla_widths(family, config: dict, name: str, heads: int) -> tuple[dict[str, int], int]:
    """The MLA widths (`families.DIMS`) and the q/k head dim (nope + rope).

    Raises:
        UnknownModelError: a q LoRA (q_a_proj / q_b_proj, DeepSeek-V2 full size) is not modelled.
    """
    if family.option(config, "q_lora_rank") is not None:
        raise UnknownModelError(
            f"config.json of {name} sets q_lora_rank (q_a_proj/q_b_proj, DeepSeek-V2 at full size); "
            "only V2-Lite's q_proj (q_lora_rank null) is modelled"
        )
    nope, rope, v = (int(family.option(config, key)) for key in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"))
    latent = int(family.option(config, "kv_lora_rank"))
    head_dim = nope + rope
    dims = {"q": heads * head_dim, "kv": heads * head_dim, "kv_a": latent + rope, "kv_latent": latent, "kv_b": heads * (nope + v), "attn_v": heads * v}
    return dims, head_dim


def mla_fields(family, config: dict) -> dict:
    """The ModelSpec fields of MLA (empty for other families)."""
    if not family.mla:
        return {}
    return {key: int(family.option(config, key)) for key in ("kv_lora_rank", "qk_rope_head_dim", "v_head_dim")}


def dense_and_shared_mlp(family, config: dict, hidden: int, num_layers: int, name: str) -> dict:
    """DeepSeek's MLP Linears beside the routed experts, and the ModelSpec fields that place them.

    The first `first_k_dense_replace` layers hold `mlp.gate_proj/up_proj/down_proj` of
    `intermediate_size`; every other layer `mlp.shared_experts.*` of n_shared x moe_intermediate_size.
    Both are nn.Linear (4-bit under QLoRA, trained by full fine-tuning) that no --targets reaches.
    """
    moe = family.moe
    if moe is None or not (moe.shared_experts_key or moe.dense_layers_key):
        return {}
    dense = int(family.option(config, moe.dense_layers_key, 0) or 0) if moe.dense_layers_key else 0
    if not 0 <= dense < num_layers:
        raise UnknownModelError(f"config.json of {name}: {moe.dense_layers_key}={dense}; need 0 <= it < num_hidden_layers={num_layers}")
    shared = int(family.option(config, moe.shared_experts_key, 0) or 0) * int(config[moe.intermediate_key])
    dense_width = int(config["intermediate_size"]) if dense else 0
    bias = bool(config.get("mlp_bias", False))

    def mlp(prefix: str, width: int, kind: str) -> tuple[LinearSpec, ...]:
        return (
            LinearSpec(f"{prefix}gate_proj", hidden, width, bias, "mlp", "mlp_in", kind, adaptable=False),
            LinearSpec(f"{prefix}up_proj", hidden, width, bias, "mlp", "mlp_in", kind, adaptable=False),
            LinearSpec(f"{prefix}down_proj", width, hidden, bias, "mlp", "mlp_prod", kind, adaptable=False),
        )

    linears = (mlp("mlp.", dense_width, "dense") if dense else ()) + (mlp("mlp.shared_experts.", shared, "sparse") if shared else ())
    return {"linears": linears, "dense_layers": dense, "dense_intermediate_size": dense_width, "shared_expert_intermediate_size": shared}


def mla_attention_saved_bytes(model: ModelSpec, run: RunConfig, attn_bytes: int, lo: int, trains_base: bool) -> tuple[int, int]:
    """(what one MLA layer saves for SDPA and the latent norm, of it what grows with seq²), no checkpointing.

    v's head dim differs from q/k's, so SDPA cannot take its flash kernel. On the CPU it runs the
    math path, which keeps fp32 copies of q (scaled), k and v and the fp32 softmax probabilities
    (batch x heads x seq²); measured tensor by tensor on probe-deepseek-v2. On CUDA the
    memory-efficient kernel takes it and keeps q, k (new tensors of nope + rope per head), v as a
    view of kv_b_proj's whole output, its output (heads x v) and an fp32 logsumexp per head (not
    measured: no CUDA run yet). kv_a_layernorm keeps its fp32 input and rsqrt, and its 16-bit x̂ for a
    trainable weight. The rotary products keep only the shared freqs_cis.
    """
    t, heads = run.tokens, model.num_heads
    qk, v = heads * model.head_dim, heads * model.v_head_dim
    norm = FP32 * t * (model.kv_lora_rank + 1) + (lo * t * model.kv_lora_rank if trains_base else 0)
    if run.device_kind == "cpu":
        return FP32 * t * (2 * qk + v) + norm, FP32 * run.batch * heads * run.seq_len * run.seq_len
    kv_b = heads * (model.head_dim - model.qk_rope_head_dim + model.v_head_dim)
    return attn_bytes * t * (2 * qk + kv_b + v) + FP32 * t * heads + norm, 0
