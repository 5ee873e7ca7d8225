"""Inventory a local config.json or model directory.

Families with a record (`planner.families`) are counted analytically; any other architecture
transformers knows is built on the meta device (no weights, no network) and read module by
module, its Linears grouped by their names. torch and transformers are imported here lazily:
the catalog path never pays for them.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from .architectures import spec_from_config
from .errors import UnknownModelError
from .families import FAMILIES
from .specs import LinearSpec, ModelSpec

# without a family record, a Linear whose path in the layer has one of these is "attention"
ATTENTION_HINTS = ("attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj", "qkv")
# ... and these names, common to most architectures, read the attention output / the MLP
# product; every other Linear reads its group's input
GUESSED_READS = {"o_proj": "attn_out", "down_proj": "mlp_prod"}


def read_config(path: Path) -> dict:
    """Read config.json from a file or a model directory.

    Raises:
        UnknownModelError: missing file or malformed JSON, with the path and what to do.
    """
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise UnknownModelError(f"{path} has no config.json; pass a model directory that contains one, or the file itself")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnknownModelError(f"{file} is not valid JSON ({exc}); fix or re-download it") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise UnknownModelError(f"{file} has no 'model_type'; it does not look like a transformers config.json")
    return config


def spec_from_path(path: Path) -> tuple[ModelSpec, dict]:
    """ModelSpec of a local config.json or model directory, with the config dict."""
    config = read_config(path)
    name = config.get("_name_or_path") or path.name
    from .vision import is_vlm_config, vlm_spec_from_config

    if is_vlm_config(config):  # the decoder, with the vision tower and projector as components (as catalog VLMs)
        return vlm_spec_from_config(config, str(name), source="config.json").model, config
    if config["model_type"] in FAMILIES:
        return spec_from_config(config, str(name), source="config.json"), config
    return spec_from_meta_model(config, str(name)), config


def build_meta_model(config: dict):
    """Build the causal LM on the meta device from a config dict (no weights, no network)."""
    import torch
    import transformers

    try:
        hf_config = transformers.AutoConfig.for_model(**config)
    except (ValueError, KeyError, TypeError) as exc:
        raise UnknownModelError(f"transformers cannot read this config ({exc}); is transformers recent enough?") from None
    with torch.device("meta"):
        try:
            return transformers.AutoModelForCausalLM.from_config(hf_config)
        except (ValueError, KeyError) as exc:
            raise UnknownModelError(f"model_type {config['model_type']!r} is not a causal LM transformers can build ({exc})") from None


def _decoder_layers(model):
    import torch

    best = None
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and (best is None or len(module) > len(best)):
            best = module
    if best is None or len(best) == 0:
        raise UnknownModelError("could not find the decoder layers (no ModuleList) in this architecture")
    return best


def layer_linears(model) -> tuple[LinearSpec, ...]:
    """The Linears of a built model's first decoder layer, grouped by their names.

    For architectures without a family record; bitsandbytes' Linear4bit counts (it is an
    nn.Linear), PEFT's adapter Linears do not exist yet when this is asked.
    """
    return _linears_of(_decoder_layers(model)[0])


def _linears_of(layer) -> tuple[LinearSpec, ...]:
    import torch

    linears = []
    for module_name, module in layer.named_modules():
        if isinstance(module, torch.nn.Linear):
            short = module_name.split(".")[-1]
            group = "attention" if any(hint in module_name for hint in ATTENTION_HINTS) else "mlp"
            reads = GUESSED_READS.get(short, f"{group}_in")
            linears.append(LinearSpec(short, module.in_features, module.out_features, module.bias is not None, group, reads))
    return tuple(linears)


def spec_from_meta_model(config: dict, name: str) -> ModelSpec:
    """Read the architecture numbers off a meta-built model."""
    model = build_meta_model(config)
    layers = _decoder_layers(model)
    first = layers[0]
    linears = _linears_of(first)
    layer_params = sum(p.numel() for p in first.parameters())
    layer_linear = sum(linear.params for linear in linears)
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embed
    vocab, hidden = embed.shape
    text = config.get("text_config", config)
    heads = text.get("num_attention_heads", 1)
    spec = ModelSpec(
        name=name,
        model_type=config["model_type"],
        hidden_size=hidden,
        intermediate_size=text.get("intermediate_size", 4 * hidden),
        num_layers=len(layers),
        num_heads=heads,
        num_kv_heads=text.get("num_key_value_heads") or heads,
        head_dim=text.get("head_dim") or hidden // heads,
        vocab_size=vocab,
        tie_embeddings=tied,
        linears=linears,
        norm_params_per_layer=layer_params - layer_linear,
        final_norm_params=0,
        source="meta-device inventory",
    )
    # whatever is not in layers, embeddings or lm_head (final norm, position embeddings, ...)
    extra = total - (spec.num_layers * layer_params + spec.embed_params + spec.lm_head_params)
    return replace(spec, extra_params=extra)
