"""Turn a Hugging Face `config.json` (as a dict) into a `ModelSpec`, without torch.

Covers the dense decoder families in the catalog. Any other architecture goes through
`planner.inventory`, which builds the model on the meta device and reads the modules off it.
"""

from __future__ import annotations

from .errors import UnknownModelError
from .specs import LinearSpec, ModelSpec

LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "phi3")


def _require(config: dict, key: str, name: str) -> int:
    if key not in config:
        raise UnknownModelError(f"config.json of {name} has no {key!r}; is it a decoder-only causal LM config?")
    return config[key]


def spec_from_config(config: dict, name: str, source: str = "catalog") -> ModelSpec:
    """Architecture numbers of a llama-family config, counted exactly.

    Raises:
        UnknownModelError: the model_type is not one of the known dense decoder families.
    """
    model_type = config.get("model_type", "")
    if model_type not in LLAMA_LIKE:
        raise UnknownModelError(
            f"model_type {model_type!r} of {name} is not in the analytic families ({', '.join(LLAMA_LIKE)}); "
            "pass a local config.json or model directory with --model so it can be inventoried"
        )
    hidden = _require(config, "hidden_size", name)
    inter = _require(config, "intermediate_size", name)
    heads = _require(config, "num_attention_heads", name)
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    attn_bias = bool(config.get("attention_bias", False))
    mlp_bias = bool(config.get("mlp_bias", False))
    q_out, kv_out = heads * head_dim, kv_heads * head_dim

    if model_type == "phi3":  # fused projections: qkv_proj and gate_up_proj
        linears = (
            LinearSpec("qkv_proj", hidden, q_out + 2 * kv_out, False, "attention"),
            LinearSpec("o_proj", q_out, hidden, False, "attention"),
            LinearSpec("gate_up_proj", hidden, 2 * inter, False, "mlp"),
            LinearSpec("down_proj", inter, hidden, False, "mlp"),
        )
    else:
        qkv_bias = attn_bias or model_type == "qwen2"  # Qwen2 hard-codes bias on q, k, v only
        linears = (
            LinearSpec("q_proj", hidden, q_out, qkv_bias, "attention"),
            LinearSpec("k_proj", hidden, kv_out, qkv_bias, "attention"),
            LinearSpec("v_proj", hidden, kv_out, qkv_bias, "attention"),
            LinearSpec("o_proj", q_out, hidden, attn_bias, "attention"),
            LinearSpec("gate_proj", hidden, inter, mlp_bias, "mlp"),
            LinearSpec("up_proj", hidden, inter, mlp_bias, "mlp"),
            LinearSpec("down_proj", inter, hidden, mlp_bias, "mlp"),
        )
    norms_per_layer = 4 if model_type == "gemma2" else 2  # Gemma-2 norms before and after each block
    qk_norm = model_type == "qwen3"
    return ModelSpec(
        name=name,
        model_type=model_type,
        hidden_size=hidden,
        intermediate_size=inter,
        num_layers=_require(config, "num_hidden_layers", name),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=_require(config, "vocab_size", name),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        linears=linears,
        norm_params_per_layer=norms_per_layer * hidden + (2 * head_dim if qk_norm else 0),
        final_norm_params=hidden,
        norms_per_layer=norms_per_layer,
        qk_norm=qk_norm,
        logit_softcap=bool(config.get("final_logit_softcapping")),
        source=source,
    )
