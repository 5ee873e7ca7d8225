"""Qwen3-VL: a dynamic-resolution ViT (16-px patches, 2x2 merge) + merger + DeepStack mergers + Qwen3 decoder.

What differs from Qwen2-VL (transformers 5 `modeling_qwen3_vl.py`):

* 16-px patches, so the processor resizes to multiples of 32 (patch x merge), within the
  checkpoints' `size` {shortest_edge 65,536, longest_edge 16,777,216} pixels (the same
  `smart_resize`, other bounds);
* the ViT adds a learned 48x48 position table, bilinearly interpolated to each image's grid
  (frozen weights: nothing saved for backward), beside the 2D rotary on q and k; its MLP is
  Linear -> GELU(tanh) -> Linear (the GELU saves only its input) and the patch Conv3d has a bias;
* `Qwen3VLVisionModel.get_input_embeddings()` raises NotImplementedError, so
  `enable_input_require_grads()` does not hook the tower: under checkpointing a frozen tower stays
  out of autograd and saves nothing (measured on the probe: the Qwen2-VL rule was 2.9 % high);
* DeepStack: after blocks `deepstack_visual_indexes` (3 of them) a merger of its own (LayerNorm over
  the 4 merged patches, 4E -> 4E -> LLM width) turns that block's output into features that are
  added to the image positions of LLM layers 0, 1, 2. They train with the projector, so each
  saves what the final merger saves; the tensor its norm keeps is the block's output: one storage
  with the final merger's input for the last block, and with the next block's input while a
  trained tower keeps it. The LLM side adds only the boolean-mask indices (int64, negligible);
* the decoder is Qwen3 (q/k RMSNorm per head) with interleaved M-RoPE, its cos/sin made once
  per step and shared by the layers as for a text Qwen3; config.json nests it in `text_config`
  (`qwen3_vl_text`), with `tie_word_embeddings` at the root (2B and 4B tie, 8B does not).

Modules: `model.visual.{patch_embed, pos_embed, blocks, merger, deepstack_merger_list}`,
`model.language_model`, `lm_head`.
"""

from __future__ import annotations

from functools import partial

from ..errors import UnknownModelError
from ..specs import LinearSpec
from .qwen2_vl import _need, _vision_config
from .qwen2_vl import image_tokens as qwen_image_tokens
from .record import Projector, VisionTower, VlmFamily, sub_config

HUB_MIN_PIXELS = 65_536  # preprocessor_config.json of the Qwen3-VL checkpoints: size.shortest_edge
HUB_MAX_PIXELS = 16_777_216  # size.longest_edge (4096 x 4096): up to 16,384 LLM tokens per image
TEXT_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def text_config(config: dict) -> dict:
    """The Qwen3 decoder: `text_config` (transformers 5 and the hub files nest it), read as model_type qwen3."""
    text = sub_config(config, "text_config", ": the Qwen3 decoder's numbers are missing", TEXT_KEYS)
    # the hub files keep tie_word_embeddings at the root (and repeat it in text_config)
    return {**text, "model_type": "qwen3", "tie_word_embeddings": config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))}


def deepstack_layers(config: dict) -> tuple[int, ...]:
    return tuple(_need(_vision_config(config), "deepstack_visual_indexes", (8, 16, 24)))


def qwen3_vision(config: dict) -> VisionTower:
    v = _vision_config(config)
    e, mlp = _need(v, "hidden_size"), _need(v, "intermediate_size")
    patch, temporal = _need(v, "patch_size", 16), _need(v, "temporal_patch_size", 2)
    positions = _need(v, "num_position_embeddings", 2304)
    return VisionTower(
        width=e, mlp_width=mlp, num_layers=_need(v, "depth"), num_heads=_need(v, "num_heads"), patch_size=patch,
        linears=(
            LinearSpec("qkv", e, 3 * e, True, "attention", "attention_in"),
            LinearSpec("proj", e, e, True, "attention", "attn_out"),
            LinearSpec("linear_fc1", e, mlp, True, "mlp", "mlp_in"),
            LinearSpec("linear_fc2", mlp, e, True, "mlp", "mlp_prod"),
        ),
        norm_params_per_layer=4 * e,  # two LayerNorms, weight + bias
        # Conv3d patch embedding with bias, learned position table
        shared_params=3 * temporal * patch * patch * e + e + positions * e,
        rotary=True,
        temporal_patch=temporal,
        mlp_act_saved=1,  # gelu_pytorch_tanh saves its input only
    )


def qwen3_projector(config: dict, tower: VisionTower, llm_width: int) -> Projector:
    """The final `merger` (LayerNorm over E, then 4E -> 4E -> d) and one DeepStack merger per tapped
    block (LayerNorm over 4E after the 2x2 shuffle, same Linears)."""
    v = _vision_config(config)
    merge = _need(v, "spatial_merge_size", 2)
    if _need(v, "out_hidden_size", llm_width) != llm_width:
        raise UnknownModelError(f"vision_config out_hidden_size {v['out_hidden_size']} is not the decoder's hidden_size {llm_width}")
    wide = tower.width * merge * merge
    taps = deepstack_layers(config)
    bad = [i for i in taps if not 0 <= i < tower.num_layers]
    if bad:
        raise UnknownModelError(f"vision_config deepstack_visual_indexes {list(bad)} are not blocks of a {tower.num_layers}-block tower")
    linears = []
    for prefix in ("", *(f"deepstack_merger_list.{i}." for i in range(len(taps)))):
        linears += [LinearSpec(prefix + "linear_fc1", wide, wide, True, "mlp", "mlp_in"),
                    LinearSpec(prefix + "linear_fc2", wide, llm_width, True, "mlp", "mlp_prod")]
    return Projector(
        linears=tuple(linears),
        other_params=2 * tower.width + len(taps) * 2 * wide,  # LayerNorm(E) + LayerNorm(4E) per DeepStack merger
        in_tokens_per_out=merge * merge,
        branches=1 + len(taps),
        # a DeepStack merger's norm input is its block's output: the final merger's input for the
        # last block, else the next block's input, kept by it whenever the tower is in autograd
        shared_inputs=sum(1 for i in taps if i == tower.num_layers - 1),
        block_shared_inputs=sum(1 for i in taps if i < tower.num_layers - 1),
    )


QWEN3_VL = VlmFamily(
    model_type="qwen3_vl",
    title="Qwen3-VL",
    text_config=text_config,
    vision=qwen3_vision,
    projector=qwen3_projector,
    image_tokens=partial(qwen_image_tokens, min_default=HUB_MIN_PIXELS, max_default=HUB_MAX_PIXELS),
    vision_module="model.visual",
    projector_module="model.visual.merger",
    llm_module="model.language_model",
    torch_class="Qwen3VLForConditionalGeneration",
    projector_modules=("model.visual.deepstack_merger_list",),
    vision_hooked=False,  # Qwen3VLVisionModel.get_input_embeddings raises NotImplementedError
)
