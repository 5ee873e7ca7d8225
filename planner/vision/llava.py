"""LLaVA-1.5 and LLaVA-NeXT: CLIP ViT-L/14-336 + a 2-layer GELU MLP projector + a Llama/Mistral/Vicuna decoder.

Modules (transformers 5): `model.vision_tower`, `model.multi_modal_projector`,
`model.language_model`, `lm_head`. The tower runs all its layers and the features come from
`vision_feature_layer` (-2); "default" drops the CLS token.
"""

from __future__ import annotations

from ..errors import UnknownModelError
from ..specs import LinearSpec
from .record import ImageTokens, Projector, VisionTower, VlmFamily, sub_config
from .tokens import select_best_resolution

CLIP_DEFAULTS = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14}
NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def text_config(config: dict) -> dict:
    text = sub_config(config, "text_config", ": the decoder's numbers are missing")
    return {"model_type": "llama", **text, "tie_word_embeddings": text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))}


def clip_vision(config: dict) -> VisionTower:
    v = {**CLIP_DEFAULTS, **(config.get("vision_config") or {})}
    if v.get("model_type", "clip_vision_model") != "clip_vision_model":
        raise UnknownModelError(f"vision_config model_type {v['model_type']!r}: only CLIP towers are counted for {config.get('model_type')}")
    e, mlp, patch, size = v["hidden_size"], v["intermediate_size"], v["patch_size"], v["image_size"]
    positions = (size // patch) ** 2 + 1
    return VisionTower(
        width=e, mlp_width=mlp, num_layers=v["num_hidden_layers"], num_heads=v["num_attention_heads"], patch_size=patch,
        linears=(
            LinearSpec("k_proj", e, e, True, "attention", "attention_in"),
            LinearSpec("v_proj", e, e, True, "attention", "attention_in"),
            LinearSpec("q_proj", e, e, True, "attention", "attention_in"),
            LinearSpec("out_proj", e, e, True, "attention", "attn_out"),
            LinearSpec("fc1", e, mlp, True, "mlp", "mlp_in"),
            LinearSpec("fc2", mlp, e, True, "mlp", "mlp_prod"),
        ),
        norm_params_per_layer=4 * e,  # two LayerNorms, weight + bias
        # class embedding, patch Conv2d (no bias), position embedding, pre and post LayerNorm
        shared_params=e + 3 * patch * patch * e + positions * e + 4 * e,
        image_size=size,
        stem_norm=True,  # pre_layrnorm
        class_token=True,
        feature_layers=_feature_layers(config.get("vision_feature_layer", -2), v["num_hidden_layers"]),
    )


def _feature_layers(layer, num_layers: int) -> int:
    """Blocks that feed `hidden_states[layer]` (the deepest of a list): index -2 of L+1 states is L-1 blocks."""
    deepest = max(i if i >= 0 else num_layers + 1 + i for i in (layer if isinstance(layer, list) else [layer]))
    return max(1, min(num_layers, deepest))


def mlp_projector(config: dict, tower: VisionTower, llm_width: int, other: int = 0) -> Projector:
    """`LlavaMultiModalProjector`: Linear(E x feature layers -> d), GELU, Linear(d -> d)."""
    layers = config.get("vision_feature_layer", -2)
    fan_in = tower.width * (len(layers) if isinstance(layers, list) else 1)
    bias = bool(config.get("multimodal_projector_bias", True))
    return Projector(
        linears=(LinearSpec("linear_1", fan_in, llm_width, bias, "mlp", "mlp_in"), LinearSpec("linear_2", llm_width, llm_width, bias, "mlp", "mlp_prod")),
        other_params=other,
    )


def _grid(spec) -> int:
    return spec.vision.image_size // spec.vision.patch_size


def llava_tokens(spec, width: int, height: int, max_pixels: int | None) -> ImageTokens:
    """Padded to a square and resized to the tower's size: (336/14)^2 = 576 tokens whatever the image.
    The ViT adds the CLS token, dropped by the "default" feature strategy."""
    grid = _grid(spec)
    drop_cls = spec.config.get("vision_feature_select_strategy", "default") == "default"
    return ImageTokens(llm=grid * grid + (0 if drop_cls else 1), vit=grid * grid + 1, tiles=1, resized=(spec.vision.image_size,) * 2)


def llava_next_tokens(spec, width: int, height: int, max_pixels: int | None) -> ImageTokens:
    """anyres (`processing_llava_next._get_number_of_features`): the base image (576) plus the best
    grid's tiles with the aspect padding removed, plus one newline token per row."""
    grid, size = _grid(spec), spec.vision.image_size
    pinpoints = spec.config.get("image_grid_pinpoints") or NEXT_PINPOINTS
    best_h, best_w = select_best_resolution(width, height, pinpoints)
    scale_h, scale_w = best_h // size, best_w // size
    cur_h, cur_w = grid * scale_h, grid * scale_w
    # unpad: the side the image does not fill is cut back to its aspect ratio
    if width / height > cur_w / cur_h:
        new_h = int(round(height * (cur_w / width), 7))
        pad = (cur_h - new_h) // 2
        cur_h -= 2 * pad
    else:
        new_w = int(round(width * (cur_h / height), 7))
        pad = (cur_w - new_w) // 2
        cur_w -= 2 * pad
    base = grid * grid
    tiles = 1 + scale_h * scale_w
    return ImageTokens(llm=base + cur_h * cur_w + cur_h, vit=tiles * (grid * grid + 1), tiles=tiles, resized=(best_w, best_h))


LLAVA = VlmFamily(
    model_type="llava",
    title="LLaVA-1.5",
    text_config=text_config,
    vision=clip_vision,
    projector=mlp_projector,
    image_tokens=llava_tokens,
    vision_module="model.vision_tower",
    projector_module="model.multi_modal_projector",
    llm_module="model.language_model",
    torch_class="LlavaForConditionalGeneration",
    default_image=(336, 336),
)

LLAVA_NEXT = VlmFamily(
    model_type="llava_next",
    title="LLaVA-NeXT",
    text_config=text_config,
    vision=clip_vision,
    projector=lambda config, tower, d: mlp_projector(config, tower, d, other=d),  # + image_newline (d)
    image_tokens=llava_next_tokens,
    vision_module="model.vision_tower",
    projector_module="model.multi_modal_projector",
    llm_module="model.language_model",
    torch_class="LlavaNextForConditionalGeneration",
    default_image=(672, 672),
)
