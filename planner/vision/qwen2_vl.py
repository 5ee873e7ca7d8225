"""Qwen2-VL and Qwen2.5-VL: a dynamic-resolution ViT (14-px patches, 2x2 merge) + merger + Qwen2 decoder.

Config traps (transformers 5): Hub files keep the text keys flat at the top level
(`Qwen2VLConfig` moves them into `text_config`); Qwen2-VL's `vision_config.embed_dim` is the
ViT width and its `hidden_size` the LLM width, Qwen2.5-VL's `hidden_size` is the ViT width and
`out_hidden_size` the LLM width. Modules: `model.visual.{patch_embed, blocks, merger}`,
`model.language_model`, `lm_head`.
"""

from __future__ import annotations

from ..errors import UnknownModelError
from ..specs import LinearSpec
from .record import ImageTokens, Projector, VisionTower, VlmFamily, sub_config
from .tokens import smart_resize

HUB_MIN_PIXELS = 56 * 56  # preprocessor_config.json of the Qwen2-VL / Qwen2.5-VL checkpoints
HUB_MAX_PIXELS = 12_845_056  # 16384 x 28^2: up to 16,384 LLM tokens per image
SPECIALS = 2  # <|vision_start|> and <|vision_end|> around each image's pads
TEXT_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size", "rms_norm_eps", "max_position_embeddings", "head_dim")


def _vision_config(config: dict, name: str = "") -> dict:
    return sub_config(config, "vision_config", f"; is it a {config.get('model_type')} checkpoint?", label=name or None)


def text_config(config: dict) -> dict:
    """The Qwen2 decoder's keys: `text_config` if present, else the flat top-level keys (Hub files)."""
    text = dict(config.get("text_config") or {})
    for key in TEXT_KEYS:
        if key not in text and key in config:
            text[key] = config[key]
    text["model_type"] = "qwen2"
    # v5 files keep tie_word_embeddings at the root; older ones in text_config
    text["tie_word_embeddings"] = config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))
    return text


def _need(vision: dict, key: str, default=None):
    if key in vision:
        return vision[key]
    if default is None:
        raise UnknownModelError(f"vision_config has no {key!r}")
    return default


def qwen2_vision(config: dict) -> VisionTower:
    v = _vision_config(config)
    e = _need(v, "embed_dim", 1280)  # the ViT width (hidden_size is the LLM's here)
    mlp = int(e * _need(v, "mlp_ratio", 4))
    patch, temporal = _need(v, "patch_size", 14), _need(v, "temporal_patch_size", 2)
    return VisionTower(
        width=e, mlp_width=mlp, num_layers=_need(v, "depth", 32), num_heads=_need(v, "num_heads", 16), patch_size=patch,
        linears=(
            LinearSpec("qkv", e, 3 * e, True, "attention", "attention_in"),
            LinearSpec("proj", e, e, True, "attention", "attn_out"),
            LinearSpec("fc1", e, mlp, True, "mlp", "mlp_in"),
            LinearSpec("fc2", mlp, e, True, "mlp", "mlp_prod"),
        ),
        norm_params_per_layer=4 * e,  # two LayerNorms, weight + bias
        shared_params=3 * temporal * patch * patch * e,  # Conv3d patch embedding, no bias
        rotary=True,
        temporal_patch=temporal,
    )


def qwen2_5_vision(config: dict) -> VisionTower:
    v = _vision_config(config)
    e = _need(v, "hidden_size", 1280)  # the ViT width here; out_hidden_size is the LLM's
    mlp = _need(v, "intermediate_size", 3420)
    patch, temporal = _need(v, "patch_size", 14), _need(v, "temporal_patch_size", 2)
    return VisionTower(
        width=e, mlp_width=mlp, num_layers=_need(v, "depth", 32), num_heads=_need(v, "num_heads", 16), patch_size=patch,
        linears=(
            LinearSpec("qkv", e, 3 * e, True, "attention", "attention_in"),
            LinearSpec("proj", e, e, True, "attention", "attn_out"),
            LinearSpec("gate_proj", e, mlp, True, "mlp", "mlp_in"),
            LinearSpec("up_proj", e, mlp, True, "mlp", "mlp_in"),
            LinearSpec("down_proj", mlp, e, True, "mlp", "mlp_prod"),
        ),
        norm_params_per_layer=2 * e,  # two RMSNorms
        shared_params=3 * temporal * patch * patch * e,
        layer_norm=False,
        gated_mlp=True,
        attention="windowed",  # 112-px windows, full attention in fullatt_block_indexes only
        rotary=True,
        temporal_patch=temporal,
    )


def merger(config: dict, tower: VisionTower, llm_width: int, norm_params: int) -> Projector:
    """`PatchMerger`: norm over E, then 2x2 patches concatenated (4E) -> 4E -> LLM width."""
    merge = _need(_vision_config(config), "spatial_merge_size", 2)
    wide = tower.width * merge * merge
    return Projector(
        linears=(LinearSpec("mlp.0", wide, wide, True, "mlp", "mlp_in"), LinearSpec("mlp.2", wide, llm_width, True, "mlp", "mlp_prod")),
        other_params=norm_params,
        in_tokens_per_out=merge * merge,
    )


def image_tokens(spec, width: int, height: int, max_pixels: int | None,
                 min_default: int = HUB_MIN_PIXELS, max_default: int = HUB_MAX_PIXELS) -> ImageTokens:
    """smart_resize to multiples of patch x merge within [min_pixels, max_pixels]; one LLM token per
    2x2 patches, plus the two vision specials. The ViT sees 4x as many patches (one temporal patch:
    a still image is repeated to the temporal patch size). Qwen3-VL shares the rule with its own
    patch (16) and pixel bounds."""
    v = _vision_config(spec.config)
    patch, merge = spec.vision.patch_size, _need(v, "spatial_merge_size", 2)
    processor = spec.processor
    min_pixels = processor.get("min_pixels", min_default)
    max_pixels = max_pixels or processor.get("max_pixels", max_default)
    h, w = smart_resize(height, width, patch * merge, min_pixels, max_pixels)
    patches = (h // patch) * (w // patch)
    return ImageTokens(llm=patches // (merge * merge) + SPECIALS, vit=patches, tiles=1, resized=(w, h))


QWEN2_VL = VlmFamily(
    model_type="qwen2_vl",
    title="Qwen2-VL",
    text_config=text_config,
    vision=qwen2_vision,
    projector=lambda config, tower, d: merger(config, tower, d, 2 * tower.width),  # LayerNorm ln_q
    image_tokens=image_tokens,
    vision_module="model.visual",
    projector_module="model.visual.merger",
    llm_module="model.language_model",
    torch_class="Qwen2VLForConditionalGeneration",
)

QWEN2_5_VL = VlmFamily(
    model_type="qwen2_5_vl",
    title="Qwen2.5-VL",
    text_config=text_config,
    vision=qwen2_5_vision,
    projector=lambda config, tower, d: merger(config, tower, d, tower.width),  # RMSNorm ln_q
    image_tokens=image_tokens,
    vision_module="model.visual",
    projector_module="model.visual.merger",
    llm_module="model.language_model",
    torch_class="Qwen2_5_VLForConditionalGeneration",
)
