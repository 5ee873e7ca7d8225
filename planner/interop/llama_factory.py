"""LLaMA-Factory training YAML (`llamafactory-cli train FILE`; its ModelArguments, DataArguments,
FinetuningArguments and transformers' Seq2SeqTrainingArguments), read and written.

Memory-relevant keys: model_name_or_path; stage; finetuning_type (lora / full / freeze);
lora_rank (default 8), lora_alpha (default 2 x rank), lora_dropout (default 0), lora_target
(default `all`), use_dora; quantization_bit / quantization_method / double_quantization;
cutoff_len (default 2048); per_device_train_batch_size (default 8); gradient_accumulation_steps;
disable_gradient_checkpointing (checkpointing is on by default); optim; bf16 / fp16 / pure_bf16;
flash_attn (auto / sdpa / fa2 / disabled); packing; deepspeed.

Precision follows LLaMA-Factory's loader: the base loads in the compute dtype; trainable
parameters are cast to fp32 unless pure_bf16 — so full fine-tuning with bf16 is bf16-mixed
(fp32 weights, bf16 autocast), LoRA with bf16 is a bf16 base with fp32 adapters.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .common import EXPORT_OPTIMIZERS, Reader, map_hf_optimizer, set_precision, split_names
from .parallel import deepspeed_document, map_deepspeed
from .plan_view import ExportPlan

KEY = "llama-factory"
NO_EFFECT = (
    "adapter_name_or_path", "cache_dir", "use_fast_tokenizer", "resize_vocab", "split_special_tokens", "new_special_tokens",
    "model_revision", "low_cpu_mem_usage", "rope_scaling", "trust_remote_code", "hf_hub_token", "print_param_status",
    "infer_backend", "infer_dtype", "offload_folder", "use_cache", "template", "dataset", "eval_dataset", "dataset_dir",
    "media_dir", "train_on_prompt", "mask_history", "streaming", "buffer_size", "mix_strategy", "interleave_probs",
    "overwrite_cache", "preprocessing_batch_size", "preprocessing_num_workers", "max_samples", "val_size", "tool_format",
    "tokenized_path", "ignore_pad_token_for_loss", "do_train", "do_eval", "do_predict", "output_dir", "overwrite_output_dir",
    "logging_steps", "save_steps", "save_strategy", "save_total_limit", "save_only_model", "plot_loss", "report_to", "run_name",
    "ddp_timeout", "learning_rate", "num_train_epochs", "max_steps", "lr_scheduler_type", "warmup_ratio", "warmup_steps",
    "weight_decay", "max_grad_norm", "adam_beta1", "adam_beta2", "adam_epsilon", "seed", "resume_from_checkpoint",
    "per_device_eval_batch_size", "eval_strategy", "eval_steps", "evaluation_strategy", "compute_accuracy",
    "disable_shuffling", "include_effective_tokens_per_second", "loraplus_lr_ratio", "loraplus_lr_embedding",
    "pissa_init", "pissa_iter", "pissa_convert", "create_new_adapter", "use_reentrant_gc", "quantization_device_map",
    "quantization_type", "moe_aux_loss_coef", "tf32", "dataloader_num_workers", "logging_first_step", "push_to_hub",
    "hub_model_id", "predict_with_generate", "gradient_checkpointing_kwargs",
)
NOT_MODELLED = {
    "additional_target": "these modules train in full (weights, gradients, optimizer states): not counted",
    "use_unsloth": "Unsloth kernels save fewer activations than PEFT: the estimate is PEFT's",
    "upcast_layernorm": "norm weights in fp32: a little more than estimated",
    "upcast_lmhead_output": "the output head's result in fp32: already how the loss is estimated",
    "use_galore": "GaLore projects optimizer states to low rank: the estimate keeps full AdamW states",
    "use_apollo": "APOLLO keeps compressed optimizer states: the estimate keeps full AdamW states",
    "use_badam": "BAdam trains one block at a time: the estimate trains every parameter",
    "use_adam_mini": "Adam-mini keeps fewer second moments: the estimate keeps full AdamW states",
    "use_llama_pro": "LLaMA Pro adds trainable blocks: not counted",
    "shift_attn": "shifted sparse attention: estimated as the chosen attention kernel",
    "mixture_of_depths": "mixture of depths skips tokens: not modelled",
}


def detect(document: dict) -> bool:
    own = ("finetuning_type", "stage", "cutoff_len", "lora_target", "quantization_bit", "template", "dataset_dir", "flash_attn", "lora_rank")
    return "model_name_or_path" in document and any(key in document for key in own)


def read(document: dict, path: Path):
    r = Reader(document, f"LLaMA-Factory config {path}")
    model = r.get("model_name_or_path")
    if model is not None:
        r.set("model", str(model), "model_name_or_path")
    stage = str(r.get("stage", "sft")).strip().lower()
    if stage not in ("sft", "pt"):
        r.not_modelled.append(f"stage: {stage}: a {stage.upper()} step (reference model, paired or generated samples) holds more than the SFT step estimated")
    kind = str(r.get("finetuning_type", "lora")).strip().lower()
    pure_bf16 = r.bool("pure_bf16", False)
    _method(r, kind)
    if kind == "lora":
        _lora(r)
    else:
        r.ignore("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "use_dora", "use_rslora")
    seq = r.int("cutoff_len", None)
    r.set("seq_len", seq, "cutoff_len") if seq is not None else r.set_default("seq_len", 2048, "cutoff_len")
    batch = r.int("per_device_train_batch_size", None)
    r.set("batch", batch, "per_device_train_batch_size") if batch is not None else r.set_default("batch", 8, "per_device_train_batch_size")
    accum = r.int("gradient_accumulation_steps", None)
    r.set("grad_accum", accum, "gradient_accumulation_steps") if accum is not None else r.set_default("grad_accum", 1, "gradient_accumulation_steps")
    disabled = r.bool("disable_gradient_checkpointing", None)
    if disabled is None:
        r.set_default("grad_ckpt", True, "disable_gradient_checkpointing")
    else:
        r.set("grad_ckpt", not disabled, "disable_gradient_checkpointing")
    if r.has("gradient_checkpointing"):
        r.note("gradient_checkpointing is transformers' flag; LLaMA-Factory turns checkpointing off with disable_gradient_checkpointing")
        r.ignore("gradient_checkpointing")
    optim = r.get("optim", None)
    map_hf_optimizer(r, "optim", optim) if optim is not None else r.set_default("optimizer", "adamw", "optim")
    _precision(r, kind, pure_bf16)
    attention = str(r.get("flash_attn", "auto")).strip().lower()
    mapped = {"auto": "sdpa", "sdpa": "sdpa", "fa2": "flash", "disabled": "eager"}.get(attention)
    if mapped is None:
        r.problem("attention", f"flash_attn {attention!r} is not one of auto, sdpa, fa2, disabled; pass --attention")
    else:
        r.set("attention", mapped, "flash_attn", default=not r.has("flash_attn"))
    for key in ("packing", "neat_packing"):  # neat packing: no attention across the packed rows
        if r.bool(key, False):
            r.set("packing", True, key)
    if r.bool("enable_liger_kernel", False):
        r.set("loss", "fused", "enable_liger_kernel")  # Liger's fused linear cross-entropy among its kernels
        r.note("enable_liger_kernel: its fused loss is modelled; its RMSNorm/SwiGLU/RoPE kernels save a little less than estimated")
    if r.bool("use_unsloth_gc", False):
        if r.settings.get("grad_ckpt"):
            r.set("offload_activations", True, "use_unsloth_gc")  # Unsloth's checkpointing keeps the layer inputs in host RAM
        else:
            r.not_modelled.append("use_unsloth_gc: with checkpointing disabled it does nothing")
    if r.has("deepspeed"):
        map_deepspeed(r, "deepspeed", r.get("deepspeed"), path.parent)
    for key, why in NOT_MODELLED.items():
        r.skip(key, why)
    r.ignore(*NO_EFFECT)
    r.ignore_prefixed("freeze_", "pref_", "dpo_", "kto_", "ppo_", "galore_", "apollo_", "badam_", "reward_", "eval_")
    return r.finish(KEY, str(path))


def _method(r: Reader, kind: str) -> None:
    bits = r.int("quantization_bit", None)
    backend = str(r.get("quantization_method", "bnb")).strip().lower()
    quantized = bits == 4 and backend == "bnb"
    if bits is not None and not quantized:
        r.problem("adapter", f"quantization_bit {bits} with quantization_method {backend}: only 4-bit bitsandbytes (NF4) is modelled; pass --method")
    if kind == "freeze":
        r.problem("adapter", "finetuning_type freeze trains a few layers in full: not modelled; pass --method full (an upper bound) or lora")
        return
    if kind not in ("lora", "full"):
        r.problem("adapter", f"finetuning_type {kind!r} is not one of lora, full, freeze; pass --method")
        return
    if kind == "full" and quantized:
        r.problem("adapter", "a 4-bit base cannot train in full; pass --method")
        return
    dora = kind == "lora" and r.bool("use_dora", False)
    r.set("adapter", None if kind == "full" else "dora" if dora else "lora", "finetuning_type", default=not r.has("finetuning_type"))
    r.set("quantized", quantized, "quantization_bit")
    if quantized:
        r.set("double_quant", r.bool("double_quantization", True), "double_quantization", default=not r.has("double_quantization"))
    else:
        r.ignore("double_quantization")


def _lora(r: Reader) -> None:
    rank = r.int("lora_rank", None)
    r.set("rank", rank, "lora_rank") if rank is not None else r.set_default("rank", 8, "lora_rank")
    alpha = r.float("lora_alpha", None)
    if alpha is not None:
        r.set("alpha", alpha, "lora_alpha")
    dropout = r.float("lora_dropout", None)
    r.set("dropout", dropout, "lora_dropout") if dropout is not None else r.set_default("dropout", 0.0, "lora_dropout")
    targets = split_names(r.get("lora_target", "all"))
    targets = tuple("all-linear" if t == "all" else t for t in targets)
    r.set("targets", targets, "lora_target", default=not r.has("lora_target"))
    rslora = r.bool("use_rslora", None)
    if rslora is not None:
        r.set("use_rslora", rslora, "use_rslora")


def _precision(r: Reader, kind: str, pure_bf16: bool) -> None:
    bf16, fp16 = r.bool("bf16", False), r.bool("fp16", False)
    if pure_bf16:
        r.set("precision", "bf16", "pure_bf16")
        if kind == "lora":
            r.set("adapter_dtype", "bf16", "pure_bf16")
    elif bf16 or fp16:  # the Trainer's autocast over the base loaded in that dtype; full: trainable weights cast to fp32
        half = "bf16" if bf16 else "fp16"
        set_precision(r, "fp32" if kind == "full" else half, half, "bf16" if bf16 else "fp16")
    else:
        r.set("precision", None, "bf16/fp16 (neither set)", default=True)
        r.note("neither bf16 nor fp16: LLaMA-Factory picks the 16-bit dtype the GPU has; estimated that way")
    if kind == "lora" and not pure_bf16:
        r.set_default("adapter_dtype", "fp32", "pure_bf16")


# ---------------------------------------------------------------- export
MEMORY_KEYS = ("model_name_or_path", "stage", "finetuning_type", "lora_rank", "lora_alpha", "lora_dropout", "lora_target",
               "use_dora", "use_rslora", "quantization_bit", "quantization_method", "double_quantization", "cutoff_len",
               "per_device_train_batch_size", "gradient_accumulation_steps", "disable_gradient_checkpointing",
               "gradient_checkpointing", "optim", "bf16", "fp16", "pure_bf16", "flash_attn", "deepspeed", "packing",
               "neat_packing", "enable_liger_kernel", "use_unsloth_gc")
ATTENTION = {"flash": "fa2", "sdpa": "sdpa", "eager": "disabled"}
DEEPSPEED_FILES = {("zero2", "none"): "ds_z2_config.json", ("zero2", "optimizer"): "ds_z2_offload_config.json",
                   ("zero3", "none"): "ds_z3_config.json", ("zero3", "params"): "ds_z3_offload_config.json"}


def write(plan: ExportPlan, base: dict | None = None) -> tuple[dict, list[str]]:
    """The LLaMA-Factory config for `plan` (over `base`), and notes.

    Raises:
        ConfigError: a setting LLaMA-Factory cannot express.
    """
    plan.require_peft_adapter(KEY)
    run, notes = plan.run, []
    full = plan.adapter is None
    precision_keys = _precision_keys(run, full)
    doc = {key: value for key, value in (base or {}).items() if key not in MEMORY_KEYS}
    doc = {"model_name_or_path": plan.model, "stage": "sft", "do_train": True, "finetuning_type": "full" if full else "lora", **doc}
    if not full:
        doc.update(lora_rank=run.rank, lora_alpha=run.lora_alpha, lora_dropout=run.dropout, lora_target=",".join(plan.targets))
        if plan.adapter == "dora":
            doc["use_dora"] = True
        if plan.use_rslora:
            doc["use_rslora"] = True
    if plan.quantized:
        doc.update(quantization_bit=4, quantization_method="bnb", double_quantization=run.double_quant)
    if run.packing:
        doc["neat_packing"] = True  # padding-free rows that do not attend to each other, as vramplan's --packing
    if run.loss == "fused":
        doc["enable_liger_kernel"] = True
    elif run.loss == "chunked":
        raise ConfigError("--export llama-factory: --loss chunked has no LLaMA-Factory key; use --loss fused (enable_liger_kernel) or standard")
    if run.offload_activations:
        doc["use_unsloth_gc"] = True
    doc.update(cutoff_len=run.seq_len, packing=run.packing, per_device_train_batch_size=run.batch,
               gradient_accumulation_steps=plan.grad_accum, disable_gradient_checkpointing=not run.grad_ckpt,
               optim=EXPORT_OPTIMIZERS[run.optimizer], flash_attn=ATTENTION[run.attention], **precision_keys)
    parallel = plan.parallel
    if parallel is not None and parallel.strategy.startswith("zero"):
        name = DEEPSPEED_FILES.get((parallel.strategy, parallel.offload))
        doc["deepspeed"] = f"examples/deepspeed/{name}" if name else deepspeed_document(parallel.strategy, parallel.offload)
    elif parallel is not None and parallel.strategy != "ddp":
        notes.append(f"{parallel.strategy}: LLaMA-Factory runs FSDP from an accelerate config: write one with --export accelerate")
    doc.setdefault("dataset", "REPLACE_WITH_YOUR_DATASET")
    doc.setdefault("template", "default")
    if doc["dataset"] == "REPLACE_WITH_YOUR_DATASET":
        notes.append("dataset: a placeholder; name a dataset registered in data/dataset_info.json, and its template")
    doc.setdefault("output_dir", "saves/vramplan")
    doc.update(learning_rate=plan.learning_rate, num_train_epochs=plan.epochs, lr_scheduler_type=plan.lr_scheduler,
               warmup_ratio=plan.warmup_ratio)
    doc.setdefault("logging_steps", 10)
    doc.setdefault("report_to", "none")
    notes.append("launch: " + plan.launch_note("llamafactory-cli train FILE"))
    return doc, notes


def _precision_keys(run, full: bool) -> dict:
    """bf16 / fp16 / pure_bf16 giving `run.precision` (and the adapter dtype) under LLaMA-Factory's loader."""
    half = run.precision.removesuffix("-mixed")
    wanted = {"bf16": {"bf16": True}, "fp16": {"fp16": True}}.get(half)
    if wanted is None:
        raise ConfigError(f"--export llama-factory: precision {run.precision}: LLaMA-Factory trains in bf16 or fp16; use one of those")
    mixed = run.precision.endswith("-mixed")
    if full:
        if not mixed and half == "fp16":
            raise ConfigError("--export llama-factory: full fine-tuning in pure fp16 has no LLaMA-Factory setting; use fp16-mixed, bf16 or bf16-mixed")
        return wanted if mixed else {"pure_bf16": True}
    if mixed:
        raise ConfigError(f"--export llama-factory: {run.precision} with an adapter: LLaMA-Factory loads the base in {half}; use {half}")
    if run.adapter_dtype == "bf16" and half == "bf16":
        return {"pure_bf16": True}
    # LLaMA-Factory autocasts over the 16-bit base; vramplan reads that back as this pure run (an upper bound)
    if run.adapter_dtype != "fp32":
        raise ConfigError(f"--export llama-factory: adapter dtype {run.adapter_dtype}: LLaMA-Factory keeps fp32 adapters (bf16 with pure_bf16)")
    return wanted
