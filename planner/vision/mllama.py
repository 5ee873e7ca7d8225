"""Llama-3.2-Vision (`mllama`): a tiled ViT (local + gated global encoder) + one Linear + a Llama
decoder with gated cross-attention layers.

Images do not enter the LLM's sequence: each image is one `<|image|>` token in input_ids, and the
vision features enter through the cross-attention layers (`text_config.cross_attention_layers`),
whose k/v run over the vision sequence. The processor resizes each image onto a canvas of up to
`max_image_tiles` tiles of `image_size` (the aspect-ratio choice), but pads every image to
`max_num_tiles` tiles, so the tower always runs `max_num_tiles x ((image_size/patch)^2 + 1)`
patches per image whatever its size, and the cross-attention keys are that long too.
Modules (transformers 5): `model.vision_model.{transformer,global_transformer}.layers`,
`model.multi_modal_projector` (Linear(vision_output_dim -> d)), `model.language_model`, `lm_head`.
"""

from __future__ import annotations

from ..errors import UnknownModelError
from ..specs import LinearSpec
from .record import ImageTokens, Projector, VisionTower, VlmFamily, sub_config

# MllamaTextConfig / MllamaVisionConfig defaults (transformers 5.24): what a config.json may leave out
DEFAULT_CROSS_LAYERS = [3, 8, 13, 18, 23, 28, 33, 38]
VISION_DEFAULTS = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_global_layers": 8,
                   "attention_heads": 16, "vision_output_dim": 7680, "image_size": 448, "patch_size": 14, "max_num_tiles": 4}
TEXT_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
EXTRA_EMBED_ROWS = 8  # MllamaTextModel: nn.Embedding(vocab_size + 8, hidden)


def _text(config: dict) -> dict:
    return sub_config(config, "text_config", ": the decoder's numbers are missing", TEXT_KEYS, label="mllama")


def cross_layers(config: dict) -> list[int]:
    """Indices of the decoder layers that are cross-attention layers (checked against the depth)."""
    text = _text(config)
    layers = list(text.get("cross_attention_layers") or DEFAULT_CROSS_LAYERS)
    bad = [i for i in layers if not 0 <= i < text["num_hidden_layers"]]
    if bad:
        raise UnknownModelError(f"text_config cross_attention_layers {bad} are not among its {text['num_hidden_layers']} num_hidden_layers")
    return layers


def text_config(config: dict) -> dict:
    """The decoder as a Llama: every layer (self- or cross-attention) has the same Linears and two
    RMSNorms; the cross layers' q/k norms and gates and the 8 extra embedding rows are `decoder_extra`."""
    text = _text(config)
    cross_layers(config)
    keys = ("num_key_value_heads", "rms_norm_eps", "max_position_embeddings")
    return {"model_type": "llama", **{k: text[k] for k in TEXT_KEYS + keys if k in text},
            "tie_word_embeddings": text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))}


def decoder_extra(config: dict, decoder) -> int:
    """Parameters of the decoder beyond the Llama stack: per cross layer q_norm and k_norm (head_dim
    each) and two tanh gates, and the embedding's 8 extra rows."""
    return len(cross_layers(config)) * (2 * decoder.head_dim + 2) + EXTRA_EMBED_ROWS * decoder.hidden_size


def _vision(config: dict) -> dict:
    vision = sub_config(config, "vision_config", "; is it a Llama-3.2-Vision checkpoint?", label="mllama")
    v = {**VISION_DEFAULTS, **vision}
    if "num_attention_heads" in vision and "attention_heads" not in vision:
        v["attention_heads"] = vision["num_attention_heads"]
    v.setdefault("supported_aspect_ratios", [[w, h] for w in range(1, v["max_num_tiles"] + 1) for h in range(1, v["max_num_tiles"] + 1) if w * h <= v["max_num_tiles"]])
    v.setdefault("intermediate_layers_indices", [3, 7, 15, 23, 30])
    return v


def patches_per_tile(v: dict) -> int:
    """(image_size / patch)^2 patches and the class token: what each tile contributes to k/v."""
    return (v["image_size"] // v["patch_size"]) ** 2 + 1


def padded_per_tile(v: dict) -> int:
    """The tower pads each tile's sequence to a multiple of 8 (1601 -> 1608) before its encoders."""
    n = patches_per_tile(v)
    return n + (8 - n % 8) % 8


def mllama_vision(config: dict) -> VisionTower:
    v = _vision(config)
    e, mlp, patch, tiles = v["hidden_size"], v["intermediate_size"], v["patch_size"], v["max_num_tiles"]
    local, glob = v["num_hidden_layers"], v["num_global_layers"]
    positions = patches_per_tile(v)
    ratio_ids = len(v["supported_aspect_ratios"]) + 1  # id 0 is padding
    shared = (
        3 * patch * patch * e  # patch Conv2d, no bias
        + e  # class embedding
        + 1 + positions * e + ratio_ids * tiles * positions * e  # gated position embedding: gate, per patch, per tile
        + 2 * (ratio_ids * tiles * e + 1)  # pre/post tile position embeddings and their gates
        + 2 * 2 * e  # layernorm_pre, layernorm_post
        + 2 * glob  # gate_attn and gate_ffn of every global layer
    )
    return VisionTower(
        width=e, mlp_width=mlp, num_layers=local + glob, num_heads=v["attention_heads"], patch_size=patch,
        linears=(
            LinearSpec("q_proj", e, e, False, "attention", "attention_in"),
            LinearSpec("k_proj", e, e, False, "attention", "attention_in"),
            LinearSpec("v_proj", e, e, False, "attention", "attention_in"),
            LinearSpec("o_proj", e, e, False, "attention", "attn_out"),
            LinearSpec("fc1", e, mlp, True, "mlp", "mlp_in"),
            LinearSpec("fc2", mlp, e, True, "mlp", "mlp_prod"),
        ),
        norm_params_per_layer=4 * e,  # two LayerNorms, weight + bias
        shared_params=shared,
        image_size=v["image_size"],
        stem_norm=True,  # layernorm_pre
        class_token=True,
    )


def projector(config: dict, tower: VisionTower, llm_width: int) -> Projector:
    """`multi_modal_projector`: one Linear(vision_output_dim -> d) with bias over the concatenated
    final and intermediate-layer features."""
    out = _vision(config)["vision_output_dim"]
    return Projector(linears=(LinearSpec("multi_modal_projector", out, llm_width, True, "mlp", "mlp_in"),))


def optimal_canvas(width: int, height: int, max_tiles: int, tile: int) -> tuple[int, int]:
    """`image_processing_mllama.get_optimal_tiled_canvas`: the tile grid whose smallest upscale (else
    largest downscale) fits the image, the smaller area on a tie. Returns (width, height) in pixels."""
    grids = [(w, h) for w in range(1, max_tiles + 1) for h in range(1, max_tiles + 1) if w * h <= max_tiles]
    # the processor pairs (w, h) arrangements as (height, width) canvases: keep its order
    canvases = [(a * tile, b * tile) for a, b in grids]  # (canvas height, canvas width)
    scales = [min(cw / width, ch / height) for ch, cw in canvases]
    up = [s for s in scales if s >= 1]
    chosen = min(up) if up else max(s for s in scales if s < 1)
    options = [c for c, s in zip(canvases, scales) if s == chosen]
    ch, cw = min(options, key=lambda c: c[0] * c[1])
    return cw, ch


def image_tokens(spec, width: int, height: int, max_pixels: int | None) -> ImageTokens:
    """One `<|image|>` token in the LLM's sequence; the tower and the cross-attention k/v see all
    `max_num_tiles` tiles (the processor pads every image to them), whatever the image's canvas."""
    v = _vision(spec.config)
    tiles = v["max_num_tiles"]
    return ImageTokens(llm=1, vit=tiles * patches_per_tile(v), tiles=tiles, resized=optimal_canvas(width, height, tiles, v["image_size"]))


MLLAMA = VlmFamily(
    model_type="mllama",
    title="Llama-3.2-Vision",
    text_config=text_config,
    vision=mllama_vision,
    projector=projector,
    image_tokens=image_tokens,
    vision_module="model.vision_model",
    projector_module="model.multi_modal_projector",
    llm_module="model.language_model",
    torch_class="MllamaForConditionalGeneration",
    default_image=(560, 560),
    vision_checkpointed=False,  # MllamaVisionEncoderLayer is a plain nn.Module: never checkpointed
    cross_attention_layers=cross_layers,
    decoder_extra=decoder_extra,
    notes="images enter through cross-attention layers, not as tokens",
)
