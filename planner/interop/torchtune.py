"""torchtune recipe configs (`tune run lora_finetune_single_device --config FILE`).

Memory-relevant keys: model._component_ (the builder: `torchtune.models.llama3.lora_llama3_8b`,
`qlora_...` for a 4-bit base, no prefix for full fine-tuning), model.lora_attn_modules
(q_proj, k_proj, v_proj, output_proj), model.apply_lora_to_mlp / apply_lora_to_output,
model.lora_rank / lora_alpha / lora_dropout / quantize_base / use_dora, batch_size,
gradient_accumulation_steps, enable_activation_checkpointing (off by default),
enable_activation_offloading, dtype (bf16: every parameter, LoRA's too, in bf16),
optimizer._component_, optimizer_in_bwd, tokenizer.max_seq_len, dataset.packed, loss.

torchtune builds its own modules; the estimate is the same architecture under transformers +
PEFT, and a local checkpointer.checkpoint_dir with a config.json is used as the model.
"""

from __future__ import annotations

import re
from pathlib import Path

from .common import Reader

KEY = "torchtune"
# builder name (after lora_/qlora_, without _instruct/_base) -> catalog hub id
BUILDERS = {
    "llama2_7b": "meta-llama/Llama-2-7b-hf", "llama2_13b": "meta-llama/Llama-2-13b-hf", "llama2_70b": "meta-llama/Llama-2-70b-hf",
    "llama3_8b": "meta-llama/Meta-Llama-3-8B", "llama3_70b": "meta-llama/Meta-Llama-3-70B",
    "llama3_1_8b": "meta-llama/Llama-3.1-8B", "llama3_1_70b": "meta-llama/Llama-3.1-70B",
    "llama3_2_1b": "meta-llama/Llama-3.2-1B", "llama3_2_3b": "meta-llama/Llama-3.2-3B",
    "mistral_7b": "mistralai/Mistral-7B-v0.1", "gemma2_2b": "google/gemma-2-2b", "gemma2_9b": "google/gemma-2-9b",
    "phi3_mini": "microsoft/Phi-3-mini-4k-instruct",
    "qwen2_5_0_5b": "Qwen/Qwen2.5-0.5B", "qwen2_5_1_5b": "Qwen/Qwen2.5-1.5B", "qwen2_5_3b": "Qwen/Qwen2.5-3B",
    "qwen2_5_7b": "Qwen/Qwen2.5-7B", "qwen2_5_14b": "Qwen/Qwen2.5-14B", "qwen2_5_32b": "Qwen/Qwen2.5-32B",
    "qwen2_5_72b": "Qwen/Qwen2.5-72B", "qwen3_0_6b": "Qwen/Qwen3-0.6B", "qwen3_1_7b": "Qwen/Qwen3-1.7B",
    "qwen3_4b": "Qwen/Qwen3-4B", "qwen3_8b": "Qwen/Qwen3-8B", "qwen3_14b": "Qwen/Qwen3-14B", "qwen3_32b": "Qwen/Qwen3-32B",
}
ATTN_MODULES = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "output_proj": "o_proj"}
OPTIMIZERS = {
    "torch.optim.adamw": "adamw", "torch.optim.adam": "adamw", "bitsandbytes.optim.adamw8bit": "adamw-8bit",
    "bitsandbytes.optim.pagedadamw8bit": "paged-adamw-8bit", "bitsandbytes.optim.pagedadamw": "paged-adamw-32bit",
    "bitsandbytes.optim.pagedadamw32bit": "paged-adamw-32bit", "torchao.optim.adamw8bit": "adamw-8bit",
    "torch.optim.sgd": "sgd",
}
NO_EFFECT = (
    "seed", "shuffle", "epochs", "max_steps_per_epoch", "output_dir", "metric_logger", "log_every_n_steps",
    "log_peak_memory_stats", "log_level", "profiler", "lr_scheduler", "resume_from_checkpoint", "save_adapter_weights_only",
    "device", "compile", "clip_grad_norm", "run_val_every_n_steps", "dataset_val", "batch_size_val", "custom_sharded_layers",
    "fsdp_reshard_after_forward", "tokenizer", "dataset", "checkpointer", "optimizer", "loss", "cudnn_deterministic_mode",
)


def detect(document: dict) -> bool:
    model = document.get("model")
    return isinstance(model, dict) and "_component_" in model


def _builder(component: str) -> tuple[str, str]:
    """(prefix: "", "lora" or "qlora", the builder's model name) of a model component."""
    name = component.rsplit(".", 1)[-1].lower()
    match = re.match(r"^(q?lora)_(.*)$", name)
    prefix, rest = (match.group(1), match.group(2)) if match else ("", name)
    return prefix, re.sub(r"_(instruct|base)$", "", rest)


def read(document: dict, path: Path):
    r = Reader(document, f"torchtune config {path}")
    component = str(r.get("model._component_", ""))
    prefix, builder = _builder(component)
    local = Path(str(r.peek("checkpointer.checkpoint_dir", ""))).expanduser() if r.peek("checkpointer.checkpoint_dir") else None
    if local is not None and (local / "config.json").is_file():
        r.set("model", str(local), "checkpointer.checkpoint_dir")
    elif builder in BUILDERS:
        r.set("model", BUILDERS[builder], "model._component_")
    else:
        r.problem("model", f"model builder {component!r} is not one vramplan knows ({', '.join(sorted(BUILDERS))}); pass --model")
    quantized = prefix == "qlora" or bool(r.bool("model.quantize_base", False))
    dora = bool(r.bool("model.use_dora", False))
    adapter = ("dora" if dora else "lora") if prefix else None
    r.set("adapter", adapter, "model._component_")
    r.set("quantized", quantized, "model.quantize_base" if r.has("model.quantize_base") else "model._component_")
    if quantized:
        r.set_default("double_quant", False, "model.quantize_base")  # torchao NF4 keeps per-block scalers, no double quant
        r.note("torchtune's NF4 (torchao) is estimated as bitsandbytes NF4 without double quantization")
    if adapter:
        _lora(r)
    batch = r.int("batch_size", None)
    r.set("batch", batch, "batch_size") if batch is not None else r.problem("batch", "no batch_size; pass --batch")
    accum = r.int("gradient_accumulation_steps", None)
    r.set("grad_accum", accum, "gradient_accumulation_steps") if accum is not None else r.set_default("grad_accum", 1, "gradient_accumulation_steps")
    ckpt = r.bool("enable_activation_checkpointing", None)
    r.set("grad_ckpt", ckpt, "enable_activation_checkpointing") if ckpt is not None else r.set_default("grad_ckpt", False, "enable_activation_checkpointing")
    dtype = str(r.get("dtype", "bf16")).lower()
    precision = {"bf16": "bf16", "bfloat16": "bf16", "fp32": "fp32", "float32": "fp32", "fp16": "fp16", "float16": "fp16"}.get(dtype)
    if precision is None:
        r.problem("precision", f"dtype {dtype!r} is not bf16 or fp32; pass --precision")
    else:
        r.set("precision", precision, "dtype", default=not r.has("dtype"))
        if adapter:  # torchtune builds every parameter, LoRA's included, in the training dtype
            r.set("adapter_dtype", precision, "dtype", default=not r.has("dtype"))
    optimizer = str(r.get("optimizer._component_", "torch.optim.AdamW"))
    if optimizer.lower() in OPTIMIZERS:
        r.set("optimizer", OPTIMIZERS[optimizer.lower()], "optimizer._component_")
    else:
        r.problem("optimizer", f"optimizer {optimizer!r} is not modelled; pass --optimizer")
    seq = r.int("tokenizer.max_seq_len", None)
    if seq is not None:
        r.set("seq_len", seq, "tokenizer.max_seq_len")
    else:
        r.problem("seq_len", "tokenizer.max_seq_len is not set (rows are not truncated, the longest decides); pass --seq-len")
    r.set("attention", "sdpa", "model._component_", default=True)  # torchtune attends with F.scaled_dot_product_attention
    if r.bool("dataset.packed", False):
        r.set("packing", True, "dataset.packed")
    loss = str(r.peek("loss._component_", ""))
    if "chunked" in loss.lower() or "linearcrossentropy" in loss.lower():
        r.not_modelled.append(f"loss._component_: {loss.rsplit('.', 1)[-1]} never holds all fp32 logits at once: the estimate counts them (an upper bound)")
    r.skip("optimizer_in_bwd", "the optimizer steps inside backward and frees each gradient: the estimate keeps all gradients (an upper bound)")
    if r.bool("enable_activation_offloading", False):
        if r.settings.get("grad_ckpt"):
            r.set("offload_activations", True, "enable_activation_offloading")
            r.note("enable_activation_offloading: estimated as the checkpointed layer inputs in host RAM")
        else:
            r.not_modelled.append("enable_activation_offloading: without checkpointing every saved activation moves to host RAM; the estimate keeps them (an upper bound)")
    r.skip("fsdp_cpu_offload", "parameters offloaded to host RAM under FSDP: pass --gpus N --strategy fsdp --offload params")
    r.note("torchtune's own modules, estimated as the same architecture under transformers + PEFT; "
           "a distributed recipe (tune run --nproc_per_node N ...) shards with FSDP: pass --gpus N --strategy fsdp")
    r.ignore(*NO_EFFECT)
    return r.finish(KEY, str(path))


def _lora(r: Reader) -> None:
    attn = r.get("model.lora_attn_modules", ["q_proj", "v_proj"])
    targets = [ATTN_MODULES.get(str(name), str(name)) for name in (attn if isinstance(attn, list) else [attn])]
    if r.bool("model.apply_lora_to_mlp", False):
        targets += ["gate_proj", "up_proj", "down_proj"]  # torchtune's w1, w3, w2
    if r.bool("model.apply_lora_to_output", False):
        targets.append("lm_head")
    r.set("targets", tuple(targets), "model.lora_attn_modules")
    rank = r.int("model.lora_rank", None)
    r.set("rank", rank, "model.lora_rank") if rank is not None else r.set_default("rank", 8, "model.lora_rank")
    alpha = r.float("model.lora_alpha", None)
    r.set("alpha", alpha, "model.lora_alpha") if alpha is not None else r.set_default("alpha", 16.0, "model.lora_alpha")
    dropout = r.float("model.lora_dropout", None)
    r.set("dropout", dropout, "model.lora_dropout") if dropout is not None else r.set_default("dropout", 0.0, "model.lora_dropout")
