"""PaliGemma and PaliGemma 2: SigLIP-So400m + one Linear projector + a Gemma / Gemma-2 decoder.

Modules (transformers 5): `model.vision_tower` (a SigLIP vision transformer, no class token,
`post_layernorm` on the last block; the attention-pooling head only if `vision_use_head`),
`model.multi_modal_projector.linear`, `model.language_model`, `lm_head` (tied to the embedding).
The processor squares every image to the tower's size: `(image_size / patch_size)^2` image
tokens whatever the image (256 at 224 px, 1024 at 448 px), placed before the text. Training
passes `token_type_ids` (0: image + prefix, 1: suffix), so the decoder's mask is prefix-LM:
bidirectional over image and prefix, causal after. transformers builds that mask explicitly,
so SDPA cannot run as `is_causal` (the planner charges it like a packed batch's mask).
"""

from __future__ import annotations

from ..errors import UnknownModelError
from ..specs import LinearSpec
from .record import ImageTokens, Projector, VisionTower, VlmFamily, sub_config

# SiglipVisionConfig's defaults (transformers 5): what a hub vision_config leaves out
SIGLIP_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                   "image_size": 224, "patch_size": 16, "vision_use_head": True}
SIGLIP_TYPES = ("siglip_vision_model", "idefics3_vision", "smolvlm_vision")


def siglip_tower(vision: dict, what: str, head: bool = False) -> VisionTower:
    """A SigLIP-style ViT: patch Conv2d (bias) + learned positions, pre-LN blocks (q/k/v/out with
    bias, tanh-GELU MLP), `post_layernorm`; `head`: the attention-pooling head's weights too."""
    v = {**SIGLIP_DEFAULTS, **vision}
    if v.get("model_type", SIGLIP_TYPES[0]) not in SIGLIP_TYPES:
        raise UnknownModelError(f"vision_config model_type {v['model_type']!r}: only SigLIP towers are counted for {what}")
    e, mlp, patch, size = v["hidden_size"], v["intermediate_size"], v["patch_size"], v["image_size"]
    positions = (size // patch) ** 2
    heads = (e + 3 * e * e + 3 * e + e * e + e + 2 * e + e * mlp + mlp + mlp * e + e) if head else 0  # probe, MHA, LN, MLP
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
        # patch Conv2d with bias, position embedding, post_layernorm (+ the pooling head)
        shared_params=3 * patch * patch * e + e + positions * e + 2 * e + heads,
        image_size=size,
        mlp_act_saved=1,  # gelu_pytorch_tanh saves its input only
        embed_leaf=True,
        post_norm=True,
    )


def text_config(config: dict) -> dict:
    text = sub_config(config, "text_config", ": the Gemma decoder's numbers are missing", label="paligemma")
    # PaliGemmaConfig ties the embedding and lm_head unless told otherwise
    return {"model_type": "gemma", **text, "tie_word_embeddings": text.get("tie_word_embeddings", config.get("tie_word_embeddings", True))}


def vision(config: dict) -> VisionTower:
    v = sub_config(config, "vision_config", ": the SigLIP tower's numbers are missing", label="paligemma")
    return siglip_tower(v, "paligemma", head=v.get("vision_use_head", True))


def projector(config: dict, tower: VisionTower, llm_width: int) -> Projector:
    """`PaliGemmaMultiModalProjector`: one Linear(E -> projection_dim) with bias."""
    out = config.get("projection_dim", (config.get("vision_config") or {}).get("projection_dim", llm_width))
    if out != llm_width:
        raise UnknownModelError(f"paligemma projection_dim {out} differs from the decoder's hidden_size {llm_width}")
    return Projector(linears=(LinearSpec("linear", tower.width, out, True, "mlp", "mlp_in"),), act_between=False)


def image_tokens(spec, width: int, height: int, max_pixels: int | None) -> ImageTokens:
    """`PaliGemmaProcessor`: every image resized to image_size x image_size, one token per patch."""
    grid = spec.vision.image_size // spec.vision.patch_size
    return ImageTokens(llm=grid * grid, vit=grid * grid, tiles=1, resized=(spec.vision.image_size,) * 2)


PALIGEMMA = VlmFamily(
    model_type="paligemma",
    title="PaliGemma",
    text_config=text_config,
    vision=vision,
    projector=projector,
    image_tokens=image_tokens,
    vision_module="model.vision_tower",
    projector_module="model.multi_modal_projector",
    llm_module="model.language_model",
    torch_class="PaliGemmaForConditionalGeneration",
    default_image=(224, 224),
    prefix_lm=True,
)
