"""TRL and transformers configs: a `TrainingArguments` / `SFTConfig` JSON or YAML, optionally
with TRL's `ModelConfig` keys (what `trl sft --config FILE` reads), read and written.

Memory-relevant keys: model_name_or_path; dtype (torch_dtype) and model_init_kwargs;
attn_implementation; use_peft with lora_r (16) / lora_alpha (32) / lora_dropout (0.05) /
lora_target_modules / use_dora; load_in_4bit / use_bnb_nested_quant (off by default in TRL);
per_device_train_batch_size (8); gradient_accumulation_steps; gradient_checkpointing (on by
default in SFTConfig, off in TrainingArguments); optim (adamw_torch_fused); bf16 / fp16;
max_length (1024 in SFTConfig; none in TrainingArguments: the data decides); packing /
padding_free; deepspeed; fsdp / fsdp_config. Defaults are TRL 1.x's and transformers 5.x's.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .common import EXPORT_OPTIMIZERS, Reader, map_hf_optimizer, set_precision, split_names
from .parallel import deepspeed_document, map_deepspeed, map_fsdp
from .plan_view import ExportPlan
from .rows import dataset_entry

KEY = "trl"
# transformers 5.x TrainingArguments fields that do not change a training step's memory (and 4.x names)
TRAINING_NO_EFFECT = (
    "output_dir", "num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps",
    "warmup_ratio", "optim_args", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "optim_target_modules",
    "average_tokens_across_devices", "max_grad_norm", "label_smoothing_factor", "bf16_full_eval", "fp16_full_eval", "tf32",
    "torch_compile", "torch_compile_backend", "torch_compile_mode", "use_cache", "neftune_noise_alpha", "torch_empty_cache_steps",
    "logging_strategy", "logging_steps", "logging_first_step", "log_on_each_node", "logging_nan_inf_filter",
    "include_num_input_tokens_seen", "log_level", "log_level_replica", "disable_tqdm", "report_to", "run_name", "project",
    "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id", "eval_strategy", "eval_steps", "eval_delay",
    "per_device_eval_batch_size", "prediction_loss_only", "eval_on_start", "eval_do_concat_batches", "eval_use_gather_object",
    "eval_accumulation_steps", "include_for_metrics", "batch_eval_metrics", "save_only_model", "save_strategy", "save_steps",
    "save_on_each_node", "save_total_limit", "enable_jit_checkpoint", "push_to_hub", "hub_token", "hub_private_repo",
    "hub_model_id", "hub_strategy", "hub_always_push", "hub_revision", "load_best_model_at_end", "metric_for_best_model",
    "greater_is_better", "ignore_data_skip", "restore_callback_states_from_checkpoint", "full_determinism", "seed", "data_seed",
    "use_cpu", "accelerator_config", "parallelism_config", "dataloader_drop_last", "dataloader_num_workers",
    "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor", "dataloader_multiprocessing_context",
    "dataloader_in_order", "remove_unused_columns", "label_names", "train_sampling_strategy", "length_column_name",
    "ddp_find_unused_parameters", "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "ddp_static_graph", "ddp_backend", "ddp_timeout",
    "debug", "skip_memory_metrics", "do_train", "do_eval", "do_predict", "resume_from_checkpoint", "local_rank",
    # transformers 4.x names still found in saved TrainingArguments JSON
    "overwrite_output_dir", "evaluation_strategy", "logging_dir", "no_cuda", "use_mps_device", "fp16_opt_level",
    "half_precision_backend", "fp16_backend", "tpu_num_cores", "tpu_metrics_debug", "past_index", "sharded_ddp",
    "fsdp_min_num_params", "fsdp_transformer_layer_cls_to_wrap", "mp_parameters", "group_by_length", "push_to_hub_model_id",
    "push_to_hub_organization", "push_to_hub_token", "include_inputs_for_metrics", "jit_mode_eval", "use_ipex", "ray_scope",
    "torchdynamo", "dispatch_batches", "split_batches", "include_tokens_per_second", "save_safetensors", "save_on_each_node",
    "use_legacy_prediction_loop", "xpu_backend", "bf16", "fp16", "hub_private_repo", "logging_first_step", "_n_gpu",
    "ddp_backend", "mp_parameters", "eval_use_gather_object", "use_cpu",
)
# TRL's own keys (SFTConfig, ModelConfig, ScriptArguments) that do not change memory
TRL_NO_EFFECT = (
    "trust_remote_code", "router_aux_loss_coef", "chat_template_path", "dataset_text_field", "dataset_kwargs",
    "dataset_num_proc", "eos_token", "truncation_mode", "shuffle_dataset", "packing_strategy", "pad_to_multiple_of",
    "eval_packing", "completion_only_loss", "assistant_only_loss", "loss_type", "pad_token", "model_revision",
    "lora_task_type", "bnb_4bit_quant_type", "bnb_4bit_quant_storage", "use_rslora", "dataset_name", "dataset_config",
    "dataset_train_split", "dataset_test_split", "dataset_streaming", "ignore_bias_buffers", "dataset_mixture", "datasets",
)
MODEL_CONFIG_KEYS = ("model_name_or_path", "use_peft", "lora_r", "load_in_4bit", "dtype", "torch_dtype", "attn_implementation", "max_length")
DTYPES = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16", "half": "fp16", "float32": "fp32", "fp32": "fp32",
          "float": "fp32", "auto": "auto"}
ATTENTION = {"sdpa": "sdpa", "eager": "eager", "flash_attention_2": "flash", "flash_attention_3": "flash",
             "kernels-community/flash-attn": "flash", "kernels-community/vllm-flash-attn3": "flash", "flex_attention": "sdpa"}


def detect(document: dict) -> bool:
    keys = ("per_device_train_batch_size", "gradient_accumulation_steps", "optim", "output_dir", "max_length", "use_peft",
            "lora_r", "model_init_kwargs", "gradient_checkpointing")
    return any(key in document for key in keys)


def read(document: dict, path: Path):
    r = Reader(document, f"TRL/TrainingArguments config {path}")
    trl = any(key in document for key in MODEL_CONFIG_KEYS) or "model_init_kwargs" in document
    model = r.get("model_name_or_path", None)
    if model is not None:
        r.set("model", str(model), "model_name_or_path")
    init = r.get("model_init_kwargs", {}) or {}
    if not isinstance(init, dict):
        r.errors.append(f"model_init_kwargs must be a mapping, got {init!r}")
        init = {}
    _adapter(r, init)
    batch = r.int("per_device_train_batch_size", None)
    r.set("batch", batch, "per_device_train_batch_size") if batch is not None else r.set_default("batch", 8, "per_device_train_batch_size")
    accum = r.int("gradient_accumulation_steps", None)
    r.set("grad_accum", accum, "gradient_accumulation_steps") if accum is not None else r.set_default("grad_accum", 1, "gradient_accumulation_steps")
    _checkpointing(r, trl)
    seq = r.int("max_length", None)
    if seq is None:
        seq = r.int("max_seq_length", None)  # TRL before 0.20
        key = "max_seq_length"
    else:
        key = "max_length"
    if seq is not None:
        r.set("seq_len", seq, key)
    elif trl:
        r.set_default("seq_len", 1024, "max_length")
    else:
        r.problem("seq_len", "a TrainingArguments file has no sequence length (the data and the collator set it); pass --seq-len")
    optim = r.get("optim", None)
    map_hf_optimizer(r, "optim", optim) if optim is not None else r.set_default("optimizer", "adamw", "optim")
    _precision(r, init, trl)
    attention = r.get("attn_implementation", None) or init.get("attn_implementation")
    if attention is None:
        r.set_default("attention", "sdpa", "attn_implementation")
    elif str(attention) in ATTENTION:
        r.set("attention", ATTENTION[str(attention)], "attn_implementation")
    else:
        r.problem("attention", f"attn_implementation {attention!r} is not modelled ({', '.join(ATTENTION)} are); pass --attention")
    for key in ("packing", "padding_free"):  # TRL packs with padding_free: position ids reset per example
        if r.bool(key, False):
            r.set("packing", True, key)
    if r.bool("use_liger_kernel", False):
        r.set("loss", "fused", "use_liger_kernel")
        r.note("use_liger_kernel: its fused loss is modelled; its RMSNorm/SwiGLU/RoPE kernels save a little less than estimated")
    if r.bool("activation_offloading", False):
        if r.settings.get("grad_ckpt"):
            r.set("offload_activations", True, "activation_offloading")
            r.note("activation_offloading: estimated as the checkpointed layer inputs in host RAM")
        else:
            r.not_modelled.append("activation_offloading: without checkpointing every saved activation moves to host RAM; the estimate keeps them (an upper bound)")
    if r.has("deepspeed") and r.peek("deepspeed"):
        map_deepspeed(r, "deepspeed", r.get("deepspeed"), path.parent)
    if r.peek("fsdp"):
        map_fsdp(r, "fsdp", r.get("fsdp"), "fsdp_config")
    r.skip("auto_find_batch_size", "the batch halves on OOM: the estimate is for the batch given")
    r.skip("lora_modules_to_save", "these modules train in full (weights, gradients, optimizer states): not counted")
    r.skip("lora_target_parameters", "adapters on parameters (e.g. MoE experts): not counted")
    r.ignore(*TRAINING_NO_EFFECT, *TRL_NO_EFFECT, "fsdp", "fsdp_config", "deepspeed", "liger_kernel_config")
    return r.finish(KEY, str(path))


def _adapter(r: Reader, init: dict) -> None:
    quant = init.get("quantization_config") if isinstance(init.get("quantization_config"), dict) else {}
    four = r.bool("load_in_4bit", False) or bool(quant.get("load_in_4bit"))
    if r.bool("load_in_8bit", False) or quant.get("load_in_8bit"):
        r.problem("adapter", "load_in_8bit: 8-bit base weights are not modelled (16/32-bit and 4-bit NF4 are); pass --method")
    peft = r.bool("use_peft", False)
    dora = r.bool("use_dora", False)
    if four and not peft:
        r.problem("adapter", "load_in_4bit without use_peft: a 4-bit base cannot train in full; pass --method")
        return
    r.set("adapter", ("dora" if dora else "lora") if peft else None, "use_peft", default=not r.has("use_peft"))
    r.set("quantized", four, "load_in_4bit")
    if four:
        nested = r.bool("use_bnb_nested_quant", None)
        if nested is None and "bnb_4bit_use_double_quant" in quant:
            nested = bool(quant["bnb_4bit_use_double_quant"])
        r.set("double_quant", bool(nested), "use_bnb_nested_quant", default=nested is None)
    else:
        r.ignore("use_bnb_nested_quant")
    if not peft:
        r.ignore("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "use_dora")
        return
    for key, setting, default in (("lora_r", "rank", 16), ("lora_alpha", "alpha", 32.0), ("lora_dropout", "dropout", 0.05)):
        value = r.int(key, None) if setting == "rank" else r.float(key, None)
        r.set(setting, value, key) if value is not None else r.set_default(setting, default, key)
    targets = r.get("lora_target_modules", None)
    if targets:
        names = split_names(targets)
        r.set("targets", tuple("all-linear" if name == "all-linear" else name for name in names), "lora_target_modules")
    else:
        r.set_default("targets", ("q_proj", "v_proj"), "lora_target_modules")
        r.note("lora_target_modules not set: PEFT's default for Llama-style models, q_proj and v_proj")
    rslora = r.bool("use_rslora", None)
    if rslora is not None:
        r.set("use_rslora", rslora, "use_rslora")


def _checkpointing(r: Reader, trl: bool) -> None:
    for key in ("gradient_checkpointing", "activation_checkpointing"):
        value = r.bool(key, None)
        if value is not None:
            r.set("grad_ckpt", value, key)
            break
    else:
        r.set_default("grad_ckpt", trl, "gradient_checkpointing")  # SFTConfig turns it on; TrainingArguments leaves it off
    kwargs = r.get("gradient_checkpointing_kwargs", None) or r.get("activation_checkpointing_kwargs", None) or {}
    if isinstance(kwargs, dict) and kwargs.get("use_reentrant") in (True, "true"):
        r.note("use_reentrant: true: reentrant checkpointing; estimated as non-reentrant (the same checkpoints)")
    if isinstance(kwargs, dict) and kwargs.get("every_n_layers", 1) not in (1, None):
        r.not_modelled.append(f"every_n_layers {kwargs['every_n_layers']}: checkpoints every n-th layer only; estimated with every layer checkpointed")


def _precision(r: Reader, init: dict, trl: bool) -> None:
    """Weights dtype (dtype / torch_dtype / model_init_kwargs) x autocast (bf16 / fp16)."""
    raw = r.get("dtype", None) or r.get("torch_dtype", None) or init.get("dtype") or init.get("torch_dtype")
    weights = DTYPES.get(str(raw).replace("torch.", "")) if raw is not None else ("fp32" if trl else "auto")
    if weights is None:
        r.problem("precision", f"dtype {raw!r} is not one of {', '.join(DTYPES)}; pass --precision")
        return
    bf16, fp16 = r.bool("bf16", None), r.bool("fp16", False)
    if bf16 is None:
        bf16 = trl and not fp16  # SFTConfig: bf16 unless fp16; TrainingArguments: off
    autocast = "bf16" if bf16 else "fp16" if fp16 else None
    key = "dtype" if raw is not None else ("dtype (TRL default float32)" if trl else "dtype (not in the file)")
    if weights == "auto":
        r.note("the weights' dtype is not in a TrainingArguments file: from_pretrained loads the checkpoint's (bf16 for most); "
               "estimated as 16-bit weights, pass --precision if yours differ")
        weights = autocast or "bf16"
    set_precision(r, weights, autocast, key, default=raw is None)


# ---------------------------------------------------------------- export
MEMORY_KEYS = ("model_name_or_path", "dtype", "torch_dtype", "attn_implementation", "use_peft", "lora_r", "lora_alpha",
               "lora_dropout", "lora_target_modules", "use_dora", "use_rslora", "load_in_4bit", "load_in_8bit",
               "bnb_4bit_quant_type", "use_bnb_nested_quant", "per_device_train_batch_size", "gradient_accumulation_steps",
               "gradient_checkpointing", "gradient_checkpointing_kwargs", "optim", "bf16", "fp16", "max_length",
               "max_seq_length", "deepspeed", "fsdp", "fsdp_config", "model_init_kwargs", "packing", "padding_free",
               "use_liger_kernel", "activation_offloading")
WEIGHTS = {"bf16": ("bfloat16", True, False), "fp16": ("float16", False, True), "fp32": ("float32", False, False),
           "bf16-mixed": ("float32", True, False), "fp16-mixed": ("float32", False, True)}
EXPORT_ATTENTION = {"sdpa": "sdpa", "eager": "eager", "flash": "flash_attention_2"}


def write(plan: ExportPlan, base: dict | None = None) -> tuple[dict, list[str]]:
    """A `trl sft --config FILE` document (ScriptArguments + SFTConfig + ModelConfig keys), and notes.

    Raises:
        ConfigError: a setting TRL cannot express.
    """
    plan.require_peft_adapter(KEY)
    run, notes = plan.run, []
    if plan.adapter and run.adapter_dtype != "fp32":
        raise ConfigError(f"--export trl: adapter dtype {run.adapter_dtype}: PEFT under TRL keeps fp32 adapters; use --adapter-dtype fp32")
    dtype, bf16, fp16 = WEIGHTS[run.precision]
    if plan.adapter and not run.precision.endswith("-mixed"):
        bf16 = fp16 = False  # the pure 16-bit run vramplan estimated; autocast would compute the fp32 adapters in 16 bits
        notes.append(f"bf16/fp16: false with dtype {dtype}: pure {run.precision} training, the run estimated "
                     "(autocast on would need a little less: PEFT's fp32 adapters then compute in 16 bits)")
    doc = {key: value for key, value in (base or {}).items() if key not in MEMORY_KEYS}
    doc = {"model_name_or_path": plan.model, "dtype": dtype, "attn_implementation": EXPORT_ATTENTION[run.attention], **doc}
    if plan.dataset and "dataset_name" not in doc and "datasets" not in doc:
        doc["datasets"] = [dataset_entry(plan.dataset)]  # TRL's dataset mixture: load_dataset(path, data_files=...)
    if plan.adapter:
        doc.update(use_peft=True, lora_r=run.rank, lora_alpha=run.lora_alpha, lora_dropout=run.dropout,
                   lora_target_modules=list(plan.targets), use_dora=plan.adapter == "dora", use_rslora=plan.use_rslora)
    else:
        doc["use_peft"] = False
    if plan.quantized:
        doc.update(load_in_4bit=True, bnb_4bit_quant_type="nf4", use_bnb_nested_quant=run.double_quant)
    if run.loss == "chunked":
        raise ConfigError("--export trl: --loss chunked has no TrainingArguments key; use --loss fused (use_liger_kernel) or standard")
    doc.update(use_liger_kernel=run.loss == "fused", activation_offloading=run.offload_activations)
    doc.update(max_length=run.seq_len, packing=run.packing, padding_free=run.packing, per_device_train_batch_size=run.batch,
               gradient_accumulation_steps=plan.grad_accum, gradient_checkpointing=run.grad_ckpt,
               optim=EXPORT_OPTIMIZERS[run.optimizer], bf16=bf16, fp16=fp16)
    if run.grad_ckpt:
        doc["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    parallel = plan.parallel
    if parallel is not None and parallel.strategy.startswith("zero"):
        doc["deepspeed"] = deepspeed_document(parallel.strategy, parallel.offload)
    elif parallel is not None and parallel.strategy.startswith("fsdp"):
        words = ["shard_grad_op" if parallel.strategy == "fsdp-grad-op" else "full_shard", "auto_wrap"]
        doc["fsdp"] = " ".join(words + (["offload"] if parallel.offload != "none" else []))
        doc["fsdp_config"] = {"use_orig_params": True}
    doc.setdefault("output_dir", "outputs/vramplan")
    # transformers 5 reads a warmup_steps below 1 as a fraction of the steps (warmup_ratio is gone)
    doc.update(learning_rate=plan.learning_rate, lr_scheduler_type=plan.lr_scheduler, warmup_steps=plan.warmup_ratio,
               num_train_epochs=plan.epochs)
    doc.setdefault("logging_steps", 10)
    doc.setdefault("report_to", "none")
    if not plan.dataset and "dataset_name" not in doc and "datasets" not in doc:
        notes.append("dataset_name: not set; add yours (a hub dataset or a local folder) or pass --dataset_name to trl sft")
    notes.append("launch: " + plan.launch_note("trl sft --config FILE"))
    return doc, notes
