"""axolotl YAML configs (docs: axolotl.ai "Config Reference"), read and written.

Memory-relevant keys: base_model; adapter (lora / qlora; absent: full fine-tuning),
load_in_4bit / load_in_8bit, bnb_config_kwargs.bnb_4bit_use_double_quant, peft_use_dora,
lora_r / lora_alpha / lora_dropout, lora_target_modules / lora_target_linear, sequence_len,
micro_batch_size, gradient_accumulation_steps, gradient_checkpointing, optimizer, bf16 / fp16,
flash_attention / sdp_attention / eager_attention, sample_packing, deepspeed, fsdp / fsdp_config.
Defaults for absent keys are axolotl's: micro_batch_size 1, gradient_accumulation_steps 1,
sequence_len 512, lora_dropout 0, no checkpointing, adamw_torch_fused.
"""

from __future__ import annotations

from pathlib import Path

from .common import EXPORT_OPTIMIZERS, Reader, map_hf_optimizer, row_shape, set_precision, split_names
from .parallel import map_deepspeed, map_fsdp
from .plan_view import ExportPlan
from .rows import dataset_entry

KEY = "axolotl"
NO_EFFECT = (
    "base_model_config", "model_type", "tokenizer_type", "tokenizer_config", "tokenizer_use_fast", "trust_remote_code",
    "revision_of_model", "is_llama_derived_model", "is_mistral_derived_model", "is_qwen_derived_model", "strict",
    "datasets", "test_datasets", "dataset_prepared_path", "val_set_size", "shuffle_merged_datasets", "dataset_processes",
    "chat_template", "default_system_message", "special_tokens", "tokens", "train_on_inputs", "group_by_length",
    "output_dir", "num_epochs", "max_steps", "learning_rate", "lr_scheduler", "lr_scheduler_kwargs", "cosine_min_lr_ratio",
    "warmup_steps", "warmup_ratio", "weight_decay", "max_grad_norm", "adam_beta1", "adam_beta2", "adam_epsilon",
    "optim_args", "logging_steps", "saves_per_epoch", "save_steps", "save_strategy", "save_total_limit",
    "save_safetensors", "save_only_model", "evals_per_epoch", "eval_steps", "eval_strategy", "evaluation_strategy",
    "eval_table_size", "eval_max_new_tokens", "seed", "resume_from_checkpoint", "auto_resume_from_checkpoints",
    "early_stopping_patience", "local_rank", "debug", "hub_model_id", "hub_strategy", "push_dataset_to_hub",
    "lora_model_dir", "lora_fan_in_fan_out", "loss_watchdog_threshold", "loss_watchdog_patience",
    "ddp_timeout", "ddp_find_unused_parameters", "ddp_bucket_cap_mb", "tf32", "torch_compile", "torch_compile_backend",
    "logging_first_step", "include_tokens_per_second", "gc_steps", "remove_unused_columns", "plugins", "pad_to_sequence_len",
    "eval_sample_packing", "sample_packing_eff_est", "total_num_tokens", "low_cpu_mem_usage",
    "fsdp_version", "flash_attn_fuse_qkv", "flash_attn_fuse_mlp", "use_tensorboard", "dataloader_num_workers",
    "dataloader_pin_memory", "dataloader_prefetch_factor",
)
NOT_MODELLED = {
    "lora_modules_to_save": "these modules train in full (weights, gradients, optimizer states): not counted",
    "peft_layers_to_transform": "adapters on a subset of layers: estimated on every layer (an upper bound)",
    "lora_mlp_kernel": "axolotl's fused LoRA kernels save fewer activations than PEFT: the estimate is PEFT's",
    "lora_qkv_kernel": "axolotl's fused LoRA kernels save fewer activations than PEFT: the estimate is PEFT's",
    "lora_o_kernel": "axolotl's fused LoRA kernels save fewer activations than PEFT: the estimate is PEFT's",
    "liger_rms_norm": "Liger kernels save different activations than transformers'",
    "liger_glu_activation": "Liger kernels save different activations than transformers'",
    "liger_rope": "Liger kernels save different activations than transformers'",
    "unsloth_lora_mlp": "Unsloth kernels save fewer activations than PEFT",
    "unsloth_lora_qkv": "Unsloth kernels save fewer activations than PEFT",
    "unsloth_lora_o": "Unsloth kernels save fewer activations than PEFT",
    "flash_attn_cross_entropy": "flash-attn's loss kernel holds less than the fp32 logits",
    "flash_attn_rms_norm": "flash-attn's RMSNorm saves different activations",
    "s2_attention": "shifted-sparse attention: estimated as flash attention",
    "flex_attention": "flex attention: estimated as SDPA",
    "xformers_attention": "xformers memory-efficient attention: estimated as flash attention (O(seq) memory)",
}


def detect(document: dict) -> bool:
    return "base_model" in document


def read(document: dict, path: Path) -> "Imported":  # noqa: F821 (common.Imported)
    r = Reader(document, f"axolotl config {path}")
    model = r.get("base_model")
    if model is not None:
        r.set("model", str(model), "base_model")
    _method(r)
    _lora(r)
    for key, setting in (("micro_batch_size", "batch"), ("gradient_accumulation_steps", "grad_accum"), ("sequence_len", "seq_len")):
        value = r.int(key, None)
        if value is not None:
            r.set(setting, value, key)
    if "grad_accum" not in r.settings and r.has("batch_size"):
        total, micro = r.int("batch_size", None), r.settings.get("batch", 1)
        if total:
            r.set("grad_accum", max(1, total // micro), "batch_size")
    r.set_default("batch", 1, "micro_batch_size")
    r.set_default("grad_accum", 1, "gradient_accumulation_steps")
    r.set_default("seq_len", 512, "sequence_len")
    _checkpointing(r)
    optimizer = r.get("optimizer")
    if optimizer is not None:
        map_hf_optimizer(r, "optimizer", optimizer)
    else:
        r.set_default("optimizer", "adamw", "optimizer")
    _precision(r)
    _attention(r)
    if r.bool("sample_packing", False):
        r.set("packing", True, "sample_packing")  # multipack: padding-free rows, position ids reset per example
    _savers(r)
    if r.peek("deepspeed"):
        map_deepspeed(r, "deepspeed", r.get("deepspeed"), path.parent)
    if r.peek("fsdp") or r.peek("fsdp_config"):
        map_fsdp(r, "fsdp", r.get("fsdp", []), "fsdp_config")
    for key, why in NOT_MODELLED.items():
        r.skip(key, why)
    r.ignore(*NO_EFFECT)
    r.ignore_prefixed("wandb_", "mlflow_", "comet_", "hub_", "eval_", "dataset_")
    return r.finish(KEY, str(path))


def _method(r: Reader) -> None:
    adapter = str(r.get("adapter", "") or "").strip().lower()
    four_bit = r.bool("load_in_4bit", False)
    if r.bool("load_in_8bit", False):
        r.problem("adapter", "load_in_8bit: 8-bit base weights are not modelled (vramplan models 16/32-bit and 4-bit NF4 bases); pass --method")
    if r.has("gptq") and r.get("gptq"):
        r.problem("adapter", "gptq: GPTQ-quantized bases are not modelled; pass --method")
    if adapter not in ("", "lora", "qlora"):
        r.problem("adapter", f"adapter {adapter!r} is not modelled (axolotl's lora and qlora are); pass --method")
        return
    quantized = adapter == "qlora" or (adapter == "lora" and four_bit)
    dora = r.bool("peft_use_dora", False)
    kind = None if not adapter else "dora" if dora else "lora"
    if not adapter and four_bit:
        r.problem("adapter", "load_in_4bit without an adapter: a 4-bit base cannot train in full; pass --method")
        return
    r.set("adapter", kind, "adapter" if adapter else "adapter (absent: full fine-tuning)")
    r.set("quantized", quantized, "load_in_4bit" if four_bit else "adapter")
    if quantized:
        dq = r.bool("bnb_config_kwargs.bnb_4bit_use_double_quant", True)
        r.set("double_quant", dq, "bnb_config_kwargs.bnb_4bit_use_double_quant", default=not r.has("bnb_config_kwargs.bnb_4bit_use_double_quant"))
    r.ignore("bnb_config_kwargs")
    rslora = r.bool("peft_use_rslora", None)
    if rslora is not None:
        r.set("use_rslora", rslora, "peft_use_rslora")


def _lora(r: Reader) -> None:
    if r.settings.get("adapter") is None:
        r.ignore("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_target_linear")
        return
    rank = r.int("lora_r", None)
    if rank is not None:
        r.set("rank", rank, "lora_r")
    alpha = r.float("lora_alpha", None)
    if alpha is not None:
        r.set("alpha", alpha, "lora_alpha")
    dropout = r.float("lora_dropout", None)
    r.set("dropout", dropout, "lora_dropout") if dropout is not None else r.set_default("dropout", 0.0, "lora_dropout")
    targets = split_names(r.get("lora_target_modules", []))
    if r.bool("lora_target_linear", False):
        targets = ("all-linear",) + tuple(t for t in targets if t == "lm_head")
        r.set("targets", targets, "lora_target_linear")
    elif targets:
        r.set("targets", targets, "lora_target_modules")
    else:
        r.problem("targets", "neither lora_target_modules nor lora_target_linear is set (axolotl needs one); pass --targets")


def _savers(r: Reader) -> None:
    """The loss kernels and activation offloading axolotl switches on (`planner/savers.py` models them)."""
    if r.bool("liger_fused_linear_cross_entropy", False):
        r.set("loss", "fused", "liger_fused_linear_cross_entropy")
    elif r.bool("cut_cross_entropy", False):
        r.set("loss", "fused", "cut_cross_entropy")
        r.note("cut_cross_entropy: estimated as Liger's fused linear cross-entropy (neither keeps the full logits)")
    elif r.bool("chunked_cross_entropy", False):
        r.set("loss", "chunked", "chunked_cross_entropy")
        r.note("chunked_cross_entropy: estimated with vramplan's chunk of 1024 tokens (--loss-chunk to match yours)")
    if r.bool("activation_offloading", False):
        if r.settings.get("grad_ckpt"):
            r.set("offload_activations", True, "activation_offloading")
        else:
            r.not_modelled.append("activation_offloading: without checkpointing every saved activation moves to host RAM; the estimate keeps them (an upper bound)")


def _checkpointing(r: Reader) -> None:
    value = r.get("gradient_checkpointing", False)
    if isinstance(value, str) and value.strip().lower() in ("unsloth", "offload"):
        r.set("grad_ckpt", True, "gradient_checkpointing")
        r.set("offload_activations", True, "gradient_checkpointing")  # checkpointed layer inputs in host RAM
    else:
        r.set("grad_ckpt", r.as_bool("gradient_checkpointing", value, False), "gradient_checkpointing", default=not r.has("gradient_checkpointing"))
    kwargs = r.get("gradient_checkpointing_kwargs", {})
    if isinstance(kwargs, dict) and kwargs.get("use_reentrant") in (True, "true"):
        r.note("gradient_checkpointing_kwargs.use_reentrant: true: the reentrant variant; estimated as non-reentrant (the same checkpoints)")


def _precision(r: Reader) -> None:
    """The weights load in the training dtype (`bfloat16` / `float16`: without AMP); `bf16` / `fp16`
    turn on the Trainer's autocast (`bf16: auto`: bf16 where the GPU has it)."""
    bf16, fp16 = r.get("bf16", None), r.bool("fp16", False)
    no_amp = "bf16" if r.bool("bfloat16", False) else "fp16" if r.bool("float16", False) else None
    auto = isinstance(bf16, str) and bf16.strip().lower() == "auto"
    amp = "auto" if auto else "bf16" if (bf16 is not None and (str(bf16).lower() == "full" or r.as_bool("bf16", bf16, False))) else "fp16" if fp16 else None
    weights = no_amp or {"auto": None, None: "fp32"}.get(amp, amp)  # axolotl loads the weights in the training dtype
    if auto:
        r.note("bf16: auto: bf16 on GPUs that have it, else fp16")
    key = "bfloat16" if no_amp == "bf16" else "float16" if no_amp else "bf16" if amp in ("bf16", "auto") else "fp16" if amp else "bf16/fp16 (neither set)"
    set_precision(r, weights, None if no_amp else amp, key, default=key.endswith("(neither set)") and bf16 is None)


def _attention(r: Reader) -> None:
    chosen = None
    for key, attention in (("flash_attention", "flash"), ("xformers_attention", "flash"), ("s2_attention", "flash"),
                           ("sdp_attention", "sdpa"), ("flex_attention", "sdpa"), ("eager_attention", "eager")):
        if key in NOT_MODELLED:
            continue  # listed with why by r.skip
        if r.bool(key, False) and chosen is None:
            chosen = (attention, key)
    for key in ("xformers_attention", "s2_attention", "flex_attention"):
        if r.peek(key) and chosen is None:
            chosen = ({"flex_attention": "sdpa"}.get(key, "flash"), key)
    if chosen is not None:
        r.set("attention", *chosen)
    else:
        r.set_default("attention", "sdpa", "sdp_attention")  # no flag set: transformers' default kernel


# ---------------------------------------------------------------- export
PRECISION_KEYS = {"bf16": {"bf16": True, "fp16": False}, "fp16": {"bf16": False, "fp16": True}, "fp32": {"bf16": False, "fp16": False}}
NO_AMP_KEYS = {"bf16": {"bfloat16": True, "bf16": False, "fp16": False}, "fp16": {"float16": True, "bf16": False, "fp16": False}}
DATASET_TYPES = {"messages": "chat_template", "instruction": "alpaca", "text": "completion"}  # axolotl's prompt strategies
ATTENTION_KEYS = {"flash": "flash_attention", "sdpa": "sdp_attention", "eager": "eager_attention"}
MEMORY_KEYS = ("base_model", "adapter", "load_in_4bit", "load_in_8bit", "bnb_config_kwargs", "peft_use_dora", "peft_use_rslora",
               "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_target_linear", "sequence_len",
               "micro_batch_size", "gradient_accumulation_steps", "batch_size", "gradient_checkpointing",
               "gradient_checkpointing_kwargs", "optimizer", "bf16", "fp16", "flash_attention", "sdp_attention",
               "eager_attention", "xformers_attention", "flex_attention", "s2_attention", "deepspeed", "fsdp", "fsdp_config",
               "bfloat16", "float16",
               "sample_packing", "liger_fused_linear_cross_entropy", "cut_cross_entropy", "chunked_cross_entropy", "activation_offloading")
DEEPSPEED_FILES = {("zero1", "none"): "zero1.json", ("zero2", "none"): "zero2.json", ("zero3", "none"): "zero3_bf16.json",
                   ("zero3", "params"): "zero3_bf16_cpuoffload_all.json", ("zero3", "optimizer"): "zero3_bf16_cpuoffload_params.json"}


def write(plan: ExportPlan, base: dict | None = None) -> tuple[dict, list[str]]:
    """The axolotl config for `plan` (over `base`, an axolotl config to keep the rest of), and notes.

    Raises:
        ConfigError: a setting axolotl cannot express.
    """
    from ..errors import ConfigError

    plan.require_peft_adapter(KEY)
    run, notes = plan.run, []
    mixed = run.precision.endswith("-mixed")
    if mixed:
        raise ConfigError(f"--export axolotl: precision {run.precision} (fp32 master weights under autocast) has no axolotl setting; "
                          "axolotl loads the weights in the training dtype: use bf16, fp16 or fp32")
    if plan.adapter and run.adapter_dtype != "fp32":
        raise ConfigError(f"--export axolotl: adapter dtype {run.adapter_dtype}: axolotl keeps PEFT's fp32 adapters; use --adapter-dtype fp32")
    doc = {key: value for key, value in (base or {}).items() if key not in MEMORY_KEYS}
    doc = {"base_model": plan.model, **doc}
    if plan.adapter:
        doc["adapter"] = "qlora" if plan.quantized else "lora"
        if plan.quantized:
            doc["load_in_4bit"] = True
            doc["bnb_config_kwargs"] = {"bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": run.double_quant}
        doc.update(lora_r=run.rank, lora_alpha=run.lora_alpha, lora_dropout=run.dropout, lora_target_modules=list(plan.targets))
        if plan.adapter == "dora":
            doc["peft_use_dora"] = True
        if plan.use_rslora:
            doc["peft_use_rslora"] = True
    doc.update(sequence_len=run.seq_len, micro_batch_size=run.batch, sample_packing=run.packing,
               gradient_accumulation_steps=plan.grad_accum, gradient_checkpointing="offload" if run.offload_activations else run.grad_ckpt)
    if run.loss == "fused":
        doc["plugins"] = sorted({*doc.get("plugins", []), "axolotl.integrations.liger.LigerPlugin"})
        doc["liger_fused_linear_cross_entropy"] = True
    elif run.loss == "chunked":
        raise ConfigError("--export axolotl: --loss chunked (vramplan's token chunks) has no axolotl key; use --loss fused (Liger) or standard")
    if run.grad_ckpt:
        doc["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    doc["optimizer"] = EXPORT_OPTIMIZERS[run.optimizer]
    half = run.precision.removesuffix("-mixed")
    if plan.adapter and not mixed and half in NO_AMP_KEYS:
        doc.update(NO_AMP_KEYS[half])  # the pure 16-bit run vramplan estimated: 16-bit weights, no autocast
    else:  # full fine-tuning (autocast changes nothing on 16-bit weights), or a 4-bit base's *-mixed
        doc.update(PRECISION_KEYS[half])
    doc[ATTENTION_KEYS[run.attention]] = True
    parallel = plan.parallel
    if parallel is not None and parallel.strategy.startswith("zero"):
        name = DEEPSPEED_FILES.get((parallel.strategy, parallel.offload))
        if name is None:
            raise ConfigError(f"--export axolotl: {parallel.strategy} with {parallel.offload} offload has no config among axolotl's deepspeed_configs")
        doc["deepspeed"] = f"deepspeed_configs/{name}"
        notes.append(f"deepspeed: axolotl's deepspeed_configs/{name} (copy it from the axolotl repository next to this file)")
    elif parallel is not None and parallel.strategy.startswith("fsdp"):
        doc["fsdp"] = ["shard_grad_op" if parallel.strategy == "fsdp-grad-op" else "full_shard", "auto_wrap"]
        doc["fsdp_config"] = {"fsdp_offload_params": parallel.offload != "none", "fsdp_use_orig_params": True,
                              "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "fsdp_state_dict_type": "FULL_STATE_DICT"}
    if not base or "datasets" not in base:
        entry = {"path": "REPLACE-WITH-YOUR-DATA.jsonl", "ds_type": "json"}
        if plan.dataset:
            local = dataset_entry(plan.dataset)
            entry = {"path": str(Path(plan.dataset).expanduser().resolve())} if local["path"] == "arrow" else {"path": local["data_files"], "ds_type": local["path"]}
        doc["datasets"] = [{**entry, "type": DATASET_TYPES[row_shape(plan.dataset)]}]
        if not plan.dataset:
            notes.append("datasets: a placeholder path; put your data there")
    doc.setdefault("output_dir", "./outputs/vramplan")
    doc.update(learning_rate=plan.learning_rate, lr_scheduler=plan.lr_scheduler, warmup_ratio=plan.warmup_ratio, num_epochs=plan.epochs)
    notes.append("launch: " + plan.launch_note("accelerate launch -m axolotl.cli.train FILE"))
    return doc, notes
