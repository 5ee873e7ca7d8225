"""Turn a Hugging Face `config.json` (as a dict) into a `ModelSpec`, without torch.

The layer layout comes from the model family's record (`planner.families`); this module only
reads the numbers off the config. Any other architecture goes through `planner.inventory`,
which builds the model on the meta device and reads the modules off it.
"""

from __future__ import annotations

from dataclasses import replace

from .errors import UnknownModelError
from .families import FAMILIES, Family
from .mla import dense_and_shared_mlp, mla_fields, mla_widths
from .specs import Component, LinearSpec, ModelSpec

# the model_types counted analytically: a live view, so a family registered later is in it
ANALYTIC_FAMILIES = FAMILIES.keys()


def _require(config: dict, key: str, name: str) -> int:
    if key not in config:
        raise UnknownModelError(f"config.json of {name} has no {key!r}; is it a decoder-only causal LM config?")
    return config[key]


def _widths(family: Family, config: dict, name: str) -> tuple[dict[str, int], int, int, int]:
    """The widths projections are made of (`families.DIMS`), with heads, kv heads and head_dim."""
    hidden = _require(config, "hidden_size", name)
    heads = _require(config, "num_attention_heads", name)
    kv_heads = family.option(config, "num_key_value_heads") or heads
    head_dim = family.option(config, "head_dim") or hidden // heads
    dims = {
        "hidden": hidden,
        "intermediate": _require(config, "intermediate_size", name),
        "q": heads * head_dim,
        "kv": kv_heads * head_dim,
    }
    if family.mla:  # DeepSeek-V2: q/k heads of nope + rope, v of v_head_dim, a kv latent (planner/mla.py)
        mla, head_dim = mla_widths(family, config, name, heads)
        dims.update(mla)
        kv_heads = heads
    return dims, heads, kv_heads, head_dim


def _moe_fields(family: Family, config: dict, name: str, dims: dict[str, int], num_layers: int) -> dict:
    """The sparse MLP's numbers, and its parameters as an "experts" component.

    Per layer: the router (E x H, no bias) and E experts of gate_up (2I x H) and down (H x I).
    The dense-MLP width the activation terms read becomes k * I: under balanced routing each
    token passes through k experts of width I (planner/moe.py).
    """
    moe = family.moe
    if moe is None:
        return {}
    if config.get("mlp_only_layers") or int(config.get("moe_layer_freq", 1) or 1) != 1 or int(config.get("decoder_sparse_step", 1) or 1) != 1:
        raise UnknownModelError(f"config.json of {name} mixes dense and sparse layers (mlp_only_layers / decoder_sparse_step); only all-sparse MoE models are counted")
    experts = int(family.option(config, moe.experts_key) or 0)
    top_k = int(family.option(config, moe.top_k_key) or 0)
    inter = int(_require(config, moe.intermediate_key, name))
    if experts < 1 or not 1 <= top_k <= experts:
        raise UnknownModelError(f"config.json of {name}: {moe.experts_key}={experts}, {moe.top_k_key}={top_k}; need 1 <= top-k <= experts")
    hidden = dims["hidden"]
    per_layer = experts * hidden + experts * 3 * hidden * inter  # router + gate_up + down of every expert
    mlp = dense_and_shared_mlp(family, config, hidden, num_layers, name)  # DeepSeek: dense layers, shared experts
    if moe.biases:
        per_layer += experts + experts * (2 * inter + hidden)  # gpt-oss: router, gate_up and down biases
    return {
        "intermediate_size": top_k * inter + mlp.get("shared_expert_intermediate_size", 0),
        "num_experts": experts,
        "experts_per_token": top_k,
        "expert_intermediate_size": inter,
        "router_aux_loss": bool(config.get("output_router_logits", False)),  # MoE configs default it off
        "extra_components": (Component("experts", "experts", num_layers - mlp.get("dense_layers", 0), other_params_per_layer=per_layer, family=family.model_type),),
        **mlp,
    }


def spec_from_config(config: dict, name: str, source: str = "catalog") -> ModelSpec:
    """Architecture numbers of a config whose family has a record, counted exactly.

    Raises:
        UnknownModelError: the model_type has no family record, or a required key is missing.
    """
    model_type = config.get("model_type", "")
    family = FAMILIES.get(model_type)
    if family is None:
        raise UnknownModelError(
            f"model_type {model_type!r} of {name} is not in the analytic families ({', '.join(FAMILIES)}); "
            "pass a local config.json or model directory with --model so it can be inventoried"
        )
    if family.moe is not None and "intermediate_size" not in config:
        config = {**config, "intermediate_size": config.get(family.moe.intermediate_key, 0)}
    dims, heads, kv_heads, head_dim = _widths(family, config, name)
    linears = tuple(
        LinearSpec(p.name, *p.features(dims), family.has_bias(p, config), p.group, p.reads) for p in family.projections
    )
    hidden = dims["hidden"]
    softcap = bool(family.option(config, family.logit_softcap_key)) if family.logit_softcap_key else False
    attn_softcap = bool(family.option(config, family.attn_softcap_key)) if family.attn_softcap_key else False
    window = (family.option(config, family.sliding_window_key) or 0) if family.sliding_window_key else 0
    num_layers = _require(config, "num_hidden_layers", name)
    qk_norm_params = (dims["q"] + dims["kv"] if family.qk_norm_full else 2 * head_dim) if family.qk_norm else 0
    qk_norm_params += dims.get("kv_latent", 0)  # MLA's kv_a_layernorm
    spec = ModelSpec(
        name=name,
        model_type=model_type,
        hidden_size=hidden,
        intermediate_size=dims["intermediate"],
        num_layers=num_layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=_require(config, "vocab_size", name),
        tie_embeddings=bool(family.option(config, "tie_word_embeddings", False)),
        linears=linears,
        # gpt-oss's sinks (one logit per head) are counted with the norms: small, never 4-bit, upcast alike
        norm_params_per_layer=family.norms_per_layer * hidden + qk_norm_params + (heads if family.attention_sinks else 0),
        final_norm_params=hidden,
        gated_mlp=family.gated_mlp,
        norms_per_layer=family.norms_per_layer,
        qk_norm=family.qk_norm,
        logit_softcap=softcap,
        source=source,
        sliding_window=int(window),
        sdpa=family.sdpa,
        attn_softcap=attn_softcap,
        fused_qkv=family.fused_qkv,
        norm_scale_fp32=family.norm_scale_fp32,
        attention_sinks=family.attention_sinks,
    )
    moe = _moe_fields(family, config, name, dims, num_layers)
    if "linears" in moe:  # DeepSeek's dense and shared-expert MLP Linears join the attention ones
        moe["linears"] = spec.linears + moe["linears"]
    moe.update(mla_fields(family, config))
    return replace(spec, **moe) if moe else spec
