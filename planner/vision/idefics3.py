"""Idefics3 and SmolVLM: a SigLIP tower run on every tile + a pixel-shuffle connector + a Llama decoder.

Modules (transformers 5): `model.vision_model` (Idefics3/SmolVLM vision transformer: SigLIP
blocks, `post_layernorm`), `model.connector` (pixel shuffle by `scale_factor`, then one Linear
without bias: E x s^2 -> d), `model.text_model`, `lm_head`.

The image processor (`Idefics3ImageProcessor` / `SmolVLMImageProcessor`, same rules) resizes the
longest edge to `size.longest_edge` (up or down), rounds both sides up to multiples of the tile
(`max_image_size.longest_edge`, the encoder's size), and, if that is larger than one tile, cuts
rows x cols tiles plus a global image squared to one tile; the vision batch is tiles, not images.
Each tile becomes `(image_size / patch)^2 / s^2` tokens; the prompt wraps them in
`<fake_token_around_image><row_i_col_j>`, a newline after each row, then a newline and
`<fake_token_around_image><global-img>...<fake_token_around_image>` for the global image.
"""

from __future__ import annotations

import math
from dataclasses import replace

from ..errors import UnknownModelError
from ..specs import LinearSpec
from .paligemma import siglip_tower
from .record import ImageTokens, Projector, VisionTower, VlmFamily, sub_config

MAX_IMAGE_SIZE = 4096  # image_processing_idefics3.MAX_IMAGE_SIZE
# the processors' class defaults (Idefics3ImageProcessor: 4 x 364 and 364)
PROCESSOR_DEFAULTS = {"longest_edge": 4 * 364, "tile": 364, "do_image_splitting": True}


def text_config(config: dict) -> dict:
    text = sub_config(config, "text_config", ": the decoder's numbers are missing")
    return {"model_type": "llama", **text, "tie_word_embeddings": config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))}


def vision(config: dict) -> VisionTower:
    v = sub_config(config, "vision_config", ": the SigLIP tower's numbers are missing")
    # Idefics3VisionConfig's defaults differ from SigLIP's where a hub file leaves keys out
    v = {"hidden_size": 1152, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 16,
         "image_size": 224, "patch_size": 32, **v, "model_type": "idefics3_vision"}
    tower = siglip_tower(v, config.get("model_type", "idefics3"))
    # the hooked input embedding is the whole embeddings module: its output is block 0's input
    from dataclasses import replace

    return replace(tower, embed_leaf=False)


def scale_factor(config: dict) -> int:
    return int(config.get("scale_factor", 2))


def connector(config: dict, tower: VisionTower, llm_width: int) -> Projector:
    """`Idefics3Connector`: pixel shuffle (s x s patches -> one token of s^2 E), Linear(s^2 E -> d), no bias."""
    s = scale_factor(config)
    grid = tower.image_size // tower.patch_size
    if grid % s:
        raise UnknownModelError(f"{config.get('model_type')} scale_factor {s} does not divide the {grid}x{grid} patch grid")
    return Projector(linears=(LinearSpec("proj", tower.width * s * s, llm_width, False, "mlp", "mlp_in"),), act_between=False)


def _even_resize(height: int, width: int, longest: int) -> tuple[int, int]:
    """`_resize_output_size_rescale_to_max_len` then `..._scale_below_upper_bound` (MAX_IMAGE_SIZE)."""
    aspect = width / height
    if width >= height:
        width, height = longest, int(longest / aspect)
        height += height % 2
    else:
        height, width = longest, int(longest * aspect)
        width += width % 2
    height, width = max(height, 1), max(width, 1)
    aspect = width / height
    if width >= height and width > MAX_IMAGE_SIZE:
        width, height = MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE / aspect)
    elif height > width and height > MAX_IMAGE_SIZE:
        height, width = MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE * aspect)
    return max(height, 1), max(width, 1)


def tile_grid(processor: dict, width: int, height: int) -> tuple[int, int, tuple[int, int]]:
    """(rows, cols, resized (w, h)) by `get_number_of_image_patches`; rows = cols = 0: one unsplit tile."""
    p = {**PROCESSOR_DEFAULTS, **processor}
    tile = p["tile"]
    if not p["do_image_splitting"]:
        return 0, 0, (tile, tile)
    height, width = _even_resize(height, width, p["longest_edge"])
    rows, cols = math.ceil(height / tile), math.ceil(width / tile)
    if rows * tile > tile or cols * tile > tile:
        return rows, cols, (cols * tile, rows * tile)
    return 0, 0, (tile, tile)


def processor_values(spec) -> dict:
    """The resize and tile edges: catalog processor values, else those SmolVLM hub files keep in
    vision_config (`size`, `max_image_size`), else a tile of the tower's size and the class default."""
    vc = spec.config.get("vision_config") or {}
    values = {"tile": spec.vision.image_size}
    if isinstance(vc.get("size"), dict) and "longest_edge" in vc["size"]:
        values["longest_edge"] = vc["size"]["longest_edge"]
    if isinstance(vc.get("max_image_size"), dict) and "longest_edge" in vc["max_image_size"]:
        values["tile"] = vc["max_image_size"]["longest_edge"]
    return {**PROCESSOR_DEFAULTS, **values, **spec.processor}


def image_tokens(spec, width: int, height: int, max_pixels: int | None) -> ImageTokens:
    """Tiles x per-tile tokens plus the prompt's specials (see the module docstring)."""
    v = spec.vision
    tile = processor_values(spec)["tile"]
    if tile != v.image_size:
        raise UnknownModelError(f"{spec.name}: processor tile {tile} differs from the tower's image_size {v.image_size}")
    patches = (v.image_size // v.patch_size) ** 2
    seq = patches // scale_factor(spec.config) ** 2
    rows, cols, resized = tile_grid(processor_values(spec), width, height)
    if rows == 0:
        return ImageTokens(llm=seq + 3, vit=patches, tiles=1, resized=resized)  # fake, global-img, ..., fake
    tiles = rows * cols
    # each tile: fake + <row_i_col_j> + seq; a newline per row; "\n" + fake + global-img + seq + fake
    llm = tiles * (seq + 2) + rows + 1 + seq + 3
    return ImageTokens(llm=llm, vit=(tiles + 1) * patches, tiles=tiles + 1, resized=resized)


IDEFICS3 = VlmFamily(
    model_type="idefics3",
    title="Idefics3",
    text_config=text_config,
    vision=vision,
    projector=connector,
    image_tokens=image_tokens,
    vision_module="model.vision_model",
    projector_module="model.connector",
    llm_module="model.text_model",
    torch_class="Idefics3ForConditionalGeneration",
    default_image=(512, 512),
)

# SmolVLM is Idefics3's architecture under its own classes (the same modules and processor rules)
SMOLVLM = replace(IDEFICS3, model_type="smolvlm", title="SmolVLM", torch_class="SmolVLMForConditionalGeneration")
