"""What a vision-language model is, as data: a vision tower, a projector and a text decoder.

One `VlmFamily` record per transformers `model_type` (`qwen2_vl`, `llava`, ...) says how to
read the three components off config.json, how many tokens an image becomes, where each
component lives in the torch model, and the library behaviours that change memory. Records
hold data and pure functions only: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import UnknownModelError
from ..specs import Component, LinearSpec, ModelSpec

ATTENTION_KINDS = ("full", "windowed")


def sub_config(config: dict, key: str, missing: str, required: tuple[str, ...] = (), label: str | None = None) -> dict:
    """`config[key]` (a VLM's `text_config` or `vision_config`) as a dict.

    Raises:
        UnknownModelError: in one line, naming the file's model_type (or `label`): the key is not a
            dict (`missing` ends the message), or `required` keys are absent from it.
    """
    sub = config.get(key)
    if not isinstance(sub, dict):
        raise UnknownModelError(f"config.json of {label or config.get('model_type')} has no {key!r}{missing}")
    absent = [name for name in required if name not in sub]
    if absent:
        raise UnknownModelError(f"{key} has no {', '.join(map(repr, absent))}")
    return sub


@dataclass(frozen=True)
class VisionTower:
    """A ViT: `num_layers` identical blocks over a sequence of patches (one sequence per image or tile)."""

    width: int  # hidden size of the ViT (Qwen2-VL calls it embed_dim)
    mlp_width: int
    num_layers: int
    num_heads: int
    patch_size: int
    linears: tuple[LinearSpec, ...]  # one block's Linears (what `--vision lora` wraps)
    norm_params_per_layer: int  # the block's norm weights (and biases)
    shared_params: int  # patch embedding, position embedding, pre/post norms
    layer_norm: bool = True  # LayerNorm (mean + rstd saved) or RMSNorm (Qwen2.5-VL)
    gated_mlp: bool = False  # SwiGLU MLP (Qwen2.5-VL)
    attention: str = "full"  # "windowed": Qwen2.5-VL, full attention in a few blocks only
    rotary: bool = False  # 2D rotary on q, k (Qwen2-VL), computed in fp32
    image_size: int = 0  # fixed input resolution (CLIP/SigLIP); 0 = dynamic (Qwen)
    # CLIP's pre_layrnorm between the patch embedding and block 0: the embedding output is then a
    # tensor of its own, and the norm saves its input when the stem takes part in autograd
    stem_norm: bool = False
    class_token: bool = False  # CLIP: one class token per tile beside the patches (no pixels)
    temporal_patch: int = 1  # Qwen-VL: a still image repeated to the temporal patch (2 frames)
    feature_layers: int = 0  # blocks whose output reaches the projector (LLaVA's vision_feature_layer); 0 = all
    mlp_act_saved: int = 2  # tensors the MLP activation saves: QuickGELU x*sigmoid(1.702x) two, GELU(tanh) its input
    embed_leaf: bool = False  # SigLIP: the hooked patch Conv2d output is a tensor of its own (positions are added after)
    post_norm: bool = False  # SigLIP's post_layernorm on the last block, before the projector

    def pixel_values(self, vit_tokens: int, tiles: int) -> int:
        """Floats of the pixel tensor the processor hands over for `vit_tokens` patches in `tiles` tiles."""
        patches = vit_tokens - (tiles if self.class_token else 0)
        return patches * 3 * self.patch_size * self.patch_size * self.temporal_patch

    @property
    def graph_layers(self) -> int:
        """Blocks in the backward graph: those after the feature layer run, but nothing needs their gradient."""
        return self.feature_layers or self.num_layers

    def __post_init__(self) -> None:
        problems = [f"{name} must be > 0" for name in ("width", "mlp_width", "num_layers", "num_heads", "patch_size") if getattr(self, name) <= 0]
        if self.attention not in ATTENTION_KINDS:
            problems.append(f"attention {self.attention!r} is not one of {', '.join(ATTENTION_KINDS)}")
        if problems:
            raise ValueError("vision tower: " + "; ".join(problems))

    @property
    def params(self) -> int:
        return self.num_layers * (sum(linear.params for linear in self.linears) + self.norm_params_per_layer) + self.shared_params


@dataclass(frozen=True)
class Projector:
    """Maps vision features to the LLM's width; trains in both LLaVA-style stages."""

    linears: tuple[LinearSpec, ...]
    other_params: int = 0  # norms, LLaVA-NeXT's image_newline, ...
    in_tokens_per_out: int = 1  # Qwen's merger reads 2x2 patches per LLM token
    act_between: bool = True  # LLaVA: GELU between two Linears; False: one Linear (PaliGemma, Idefics3's connector)
    branches: int = 1  # mergers reading the tower, each saving alike (Qwen3-VL: final + one per DeepStack block)
    # DeepStack mergers whose norm input is a tensor kept anyway, one storage: the final merger's
    # (a tap on the last block), and a block input the tower keeps while it is in autograd
    shared_inputs: int = 0
    block_shared_inputs: int = 0

    @property
    def params(self) -> int:
        return sum(linear.params for linear in self.linears) + self.other_params


@dataclass(frozen=True)
class ImageTokens:
    """What one image becomes: tokens in the LLM's sequence, and the ViT's own sequences."""

    llm: int  # placeholder tokens the processor writes into input_ids (specials included)
    vit: int  # patches the vision tower attends over, all tiles together
    tiles: int = 1  # ViT sequences (attention runs within each)
    resized: tuple[int, int] = (0, 0)  # (width, height) the processor resizes to, 0 if fixed


@dataclass(frozen=True)
class VlmSpec:
    """A VLM as the planner sees it: the text decoder (a `ModelSpec`), a vision tower, a projector."""

    name: str
    model_type: str
    decoder: ModelSpec  # the LLM alone (no extra components)
    vision: VisionTower
    projector: Projector
    family: "VlmFamily"
    config: dict  # config.json as given
    processor: dict = field(default_factory=dict)  # preprocessor_config.json values that set tokens (min/max_pixels, ...)

    @property
    def components(self) -> tuple[Component, ...]:
        return (
            Component("vision_tower", "vision", self.vision.num_layers, self.vision.linears,
                      self.vision.norm_params_per_layer, self.vision.shared_params, self.model_type),
            Component("projector", "projector", 1, self.projector.linears, 0, self.projector.other_params, self.model_type),
        )

    @property
    def model(self) -> ModelSpec:
        """The whole model as one `ModelSpec`: the decoder plus vision tower and projector components."""
        from dataclasses import replace

        return replace(self.decoder, extra_components=self.components)

    @property
    def params(self) -> int:
        return self.decoder.base_params + self.vision.params + self.projector.params


@dataclass(frozen=True)
class VlmFamily:
    """Everything the planner and the model builder need about one VLM `model_type`."""

    model_type: str
    title: str
    text_config: Callable[[dict], dict]  # config.json -> the text decoder's config (with its model_type)
    vision: Callable[[dict], VisionTower]
    projector: Callable[[dict, VisionTower, int], Projector]  # (config, tower, LLM width)
    # (spec, width, height, max_pixels or None) -> ImageTokens
    image_tokens: Callable[["VlmSpec", int, int, int | None], ImageTokens]
    vision_module: str  # module paths in transformers 5 (for freezing, quantizing, targeting)
    projector_module: str
    llm_module: str
    torch_class: str  # transformers class the builder makes
    projector_modules: tuple[str, ...] = ()  # further projector paths (Qwen3-VL's DeepStack mergers)
    default_image: tuple[int, int] = (448, 448)
    prefix_lm: bool = False  # PaliGemma: token_type_ids make the decoder's mask bidirectional over image + prefix
    # transformers' gradient_checkpointing_enable() checkpoints the tower's blocks
    # (GradientCheckpointingLayer); Mllama's are plain modules
    vision_checkpointed: bool = True
    # enable_input_require_grads() hooks the tower's get_input_embeddings(); Qwen3-VL's vision model
    # has none (NotImplementedError), so under checkpointing its frozen tower stays out of autograd
    vision_hooked: bool = True
    # cross-attention VLMs (Mllama): config -> the decoder layers that attend to the vision features
    cross_attention_layers: Callable[[dict], list[int]] | None = None
    decoder_extra: Callable[[dict, ModelSpec], int] | None = None  # decoder params beyond its Llama-style stack
    notes: str = ""
