"""Build a training-ready vision-language model for one run and stage, the way the seeds train them.

The model comes from its config dict (random weights) as its transformers 5 class
(`VlmFamily.torch_class`); the family record names where each component lives, so freezing,
quantizing and targeting go by full module path:

* stage 1: every weight frozen but the projector (LLaVA's `tune_mm_mlp_adapter`);
* stage 2: the projector trains and the LLM follows `--method`: full (every LLM weight), or a
  LoRA-style adapter on the LLM's decoder Linears only (peft `target_modules` as a full-path
  regex: PEFT's `all-linear` or a bare `q_proj` would also hit the vision tower), a 4-bit base
  quantizing the LLM's decoder Linears only (vision tower, projector and lm_head stay 16-bit;
  `--quantize-vision` adds the tower's block Linears), then `prepare_model_for_kbit_training`
  (every 16-bit parameter to fp32, vision tower and projector included);
* `--vision lora` adds LoRA at the same rank on every Linear in the tower's blocks, `--vision
  full` trains the tower;
* the projector is made trainable after peft, as LLaVA does (no `modules_to_save` copy).

Gradient checkpointing: `gradient_checkpointing_enable(use_reentrant=False)`, which in
transformers 5 calls `enable_input_require_grads()` on every sub-model: the frozen vision
tower's patch embedding output then requires grad too.
"""

from __future__ import annotations

import copy
import re
import warnings

import torch
from torch import nn

from vramplan.planner.specs import RunConfig
from vramplan.planner.vision import VLM_FAMILIES, vlm_spec_from_config
from vramplan.planner.vision.run import VlmRun

from .model_build import ADAPTER_DTYPES, _enable_grad_ckpt, attn_implementation, weight_dtype

VLM_PROBE_MODELS: dict[str, dict] = {
    "probe-qwen2-vl": {  # flat text keys, as the hub files
        "model_type": "qwen2_vl", "hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 4096, "tie_word_embeddings": False,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [8, 12, 12]},  # head_dim 64
        "image_token_id": 4000, "video_token_id": 4001, "vision_start_token_id": 4002, "vision_end_token_id": 4003,
        "bos_token_id": 4004, "eos_token_id": 4005,
        "vision_config": {"depth": 3, "embed_dim": 128, "num_heads": 4, "mlp_ratio": 4, "hidden_size": 256,
                          "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
    },
    "probe-qwen3-vl": {  # nested text_config, as the hub files; two DeepStack taps
        "model_type": "qwen3_vl", "tie_word_embeddings": False,
        "image_token_id": 4000, "video_token_id": 4001, "vision_start_token_id": 4002, "vision_end_token_id": 4003,
        "text_config": {"model_type": "qwen3_vl_text", "hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 3,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 4096,
                        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "bos_token_id": 4004, "eos_token_id": 4005,
                        "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [8, 12, 12], "mrope_interleaved": True}},
        "vision_config": {"depth": 3, "hidden_size": 128, "intermediate_size": 512, "num_heads": 4, "out_hidden_size": 256,
                          "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "num_position_embeddings": 2304,
                          "deepstack_visual_indexes": [0, 1], "hidden_act": "gelu_pytorch_tanh"},
    },
    "probe-mllama": {  # Llama-3.2-Vision: cross-attention layers 1 and 3, a 3 + 1 layer tiled tower
        "model_type": "mllama", "image_token_index": 4096,
        "text_config": {"model_type": "mllama_text_model", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
                        "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 4096, "max_position_embeddings": 4096,
                        "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "cross_attention_layers": [1, 3],
                        "bos_token_id": 4090, "eos_token_id": 4091, "pad_token_id": 4092},
        "vision_config": {"model_type": "mllama_vision_model", "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 3,
                          "num_global_layers": 1, "attention_heads": 4, "image_size": 224, "patch_size": 14, "max_num_tiles": 4,
                          "intermediate_layers_indices": [0, 2], "vision_output_dim": 384},
    },
    "probe-paligemma": {  # Gemma decoder with one kv head, as PaliGemma-3B; SigLIP without the pooling head
        "model_type": "paligemma", "image_token_index": 4000, "projection_dim": 256,
        "text_config": {"model_type": "gemma", "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 3,
                        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 64, "vocab_size": 4096,
                        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "hidden_activation": "gelu_pytorch_tanh"},
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 3,
                          "num_attention_heads": 4, "image_size": 224, "patch_size": 14, "projection_dim": 256, "vision_use_head": False},
    },
    "probe-smolvlm": {  # 128-px tiles of 64 patches, pixel shuffle 2: 16 tokens a tile; images resized to 256 px (2x2 tiles + global)
        "model_type": "smolvlm", "image_token_id": 4000, "scale_factor": 2, "tie_word_embeddings": False,
        "text_config": {"model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 3,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 4096, "max_position_embeddings": 4096,
                        "rms_norm_eps": 1e-5},
        "vision_config": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 3, "num_attention_heads": 4,
                          "image_size": 128, "patch_size": 16, "size": {"longest_edge": 256}, "max_image_size": {"longest_edge": 128}},
    },
    "probe-llava": {
        "model_type": "llava", "image_token_index": 4000, "image_seq_length": 256, "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default", "projector_hidden_act": "gelu",
        "text_config": {"model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 3,
                        "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 4096, "max_position_embeddings": 4096,
                        "rms_norm_eps": 1e-5, "tie_word_embeddings": False},
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 3,
                          "num_attention_heads": 4, "image_size": 224, "patch_size": 14},
    },
}

# Idefics3ForConditionalGeneration (SmolVLM-256M/500M-Instruct's class) with probe-smolvlm's numbers
VLM_PROBE_MODELS["probe-idefics3"] = {**copy.deepcopy(VLM_PROBE_MODELS["probe-smolvlm"]), "model_type": "idefics3"}


def module_paths(model_type: str) -> tuple[str, str, str]:
    """(vision tower, projector, LLM) module paths of the bare transformers model."""
    family = VLM_FAMILIES[model_type]
    return family.vision_module, family.projector_module, family.llm_module


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def component_of(name: str, model_type: str) -> str:
    """'vision', 'projector' or 'llm' for a parameter or module name of the bare model."""
    name = name.removeprefix("base_model.model.")
    vision, projector, llm = module_paths(model_type)
    if any(_under(name, path) for path in (projector, *VLM_FAMILIES[model_type].projector_modules)):
        return "projector"
    if _under(name, vision):
        return "vision"
    return "llm"


def llm_target_regex(spec, run: RunConfig) -> str:
    """peft `target_modules` (a regex, full match) for the LLM's decoder Linears `run.targets` names."""
    from vramplan.planner.targets import resolve_targets

    names = [n for n in resolve_targets(spec.decoder, run.targets) if n != "lm_head"]
    llm = re.escape(spec.family.llm_module)
    parts = [rf"{llm}\.layers\.\d+\.\w+\.({'|'.join(map(re.escape, names))})"] if names else []
    if "lm_head" in resolve_targets(spec.decoder, run.targets):
        parts.append("lm_head")
    return "|".join(parts)


def vision_target_regex(spec) -> str:
    """Every Linear in the tower's blocks (not the patch embedding, not the projector)."""
    names = "|".join(re.escape(linear.name) for linear in spec.vision.linears)
    # Qwen's blocks, CLIP's encoder.layers, Mllama's local and global encoders
    return rf"{re.escape(spec.family.vision_module)}\.(blocks|encoder\.layers|transformer\.layers|global_transformer\.layers)\.\d+\.\w+\.({names})"


def _quantize(model: nn.Module, run: RunConfig, include, meta: bool) -> int:
    from .model_build import quantize_decoder_linears

    return quantize_decoder_linears(model, run, meta=meta, include=include)


def build_vlm(hf_config: dict, run: RunConfig, vlm: VlmRun, device="cpu", meta: bool = False) -> nn.Module:
    """The VLM ready for `model.train()` + an optimizer over its `requires_grad` parameters."""
    import transformers

    spec = vlm_spec_from_config(hf_config, hf_config.get("model_type", "vlm"))
    family = spec.family
    attn, note = attn_implementation(run, "cpu" if meta else device)
    config = transformers.AutoConfig.for_model(**hf_config)
    config.use_cache = False
    if getattr(config, "text_config", None) is not None:
        config.text_config.use_cache = False
    cls = getattr(transformers, family.torch_class)
    ctx = torch.device("meta") if meta else torch.device(device)
    with ctx, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = cls._from_config(config, dtype=weight_dtype(run), attn_implementation=attn)
    method = run.method_record
    llm_trains = vlm.trains_llm
    quantized = llm_trains and method.quantizes_base or (vlm.stage == 1 and method.quantizes_base)
    llm_prefix = family.llm_module
    if quantized:
        import peft

        def include(name: str) -> bool:
            if _under(name, llm_prefix) and ".layers." in name:
                return True
            return vlm.quantize_vision and component_of(name, spec.model_type) == "vision"

        _quantize(model, run, include, meta)
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    for name, p in model.named_parameters():
        part = component_of(name, spec.model_type)
        p.requires_grad_(
            (part == "llm" and llm_trains and method.trains_base)
            or (part == "vision" and vlm.vision == "full")
            or (part == "projector" and vlm.trains_projector)
        )
    if run.grad_ckpt:
        _enable_grad_ckpt(model)  # also enable_input_require_grads(): every sub-model's input embedding
    adapter_llm = llm_trains and method.adapter is not None
    if adapter_llm or vlm.vision == "lora":
        model = _attach_lora(model, spec, run, vlm, adapter_llm, meta)
    for name, p in model.named_parameters():  # peft froze them: the projector trains in full (LLaVA)
        if component_of(name, spec.model_type) == "projector" and vlm.trains_projector:
            p.requires_grad_(True)
        if component_of(name, spec.model_type) == "vision" and vlm.vision == "full":
            p.requires_grad_(True)
    model.train()
    model.vramplan_notes = [note] if note else []
    model.vramplan_spec = spec
    return model


def _attach_lora(model, spec, run: RunConfig, vlm: VlmRun, on_llm: bool, meta: bool):
    import peft

    from vramplan.planner.errors import ConfigError

    adapter = run.method_record.adapter
    if on_llm and not adapter.uses_rank:
        raise ConfigError(f"--method {run.method}: only LoRA-style adapters are planned for VLMs yet; use lora, qlora, dora or qdora")
    parts = ([llm_target_regex(spec, run)] if on_llm else []) + ([vision_target_regex(spec)] if vlm.vision == "lora" else [])
    config = peft.LoraConfig(
        r=run.rank, lora_alpha=run.lora_alpha, lora_dropout=run.dropout, target_modules="|".join(p for p in parts if p),
        use_dora=on_llm and adapter.name == "dora", bias="none",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = peft.get_peft_model(model, config, low_cpu_mem_usage=meta)
    adtype = ADAPTER_DTYPES[run.adapter_dtype]
    if adtype != torch.float32:
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.data = p.data.to(adtype)
    return model


def trainable_by_component(model: nn.Module, model_type: str) -> dict[str, int]:
    """Trainable parameters per component ('vision', 'projector', 'llm')."""
    out = {"vision": 0, "projector": 0, "llm": 0}
    for name, p in model.named_parameters():
        if p.requires_grad:
            out[component_of(name, model_type)] += p.numel()
    return out
