"""The `RunConfig` of a live Hugging Face Trainer run: read off the model, its PEFT config, its
quantization and the `TrainingArguments`, for `vramplan.integrations.VramplanCallback`.

What it reads: the adapter (PEFT LoRA/DoRA: r, lora_alpha, lora_dropout, target_modules; none:
full fine-tuning when every parameter trains), the 4-bit base (bitsandbytes `Linear4bit`
modules, double quantization from their quant states, compute dtype from the quantization
config), the weights' dtype and the Trainer's bf16/fp16 autocast (-> precision), the adapter
dtype, gradient checkpointing (`model.is_activation_checkpointing`), the optimizer class, the
attention kernel (`config._attn_implementation`), and the savers the arguments switch on (Liger's
fused loss, packing / padding-free batches, activation offloading). Batch and sequence length come from the
batches the model actually sees.
"""

from __future__ import annotations

import json

import torch

from vramplan.planner.errors import ConfigError
from vramplan.planner.specs import RunConfig

DTYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
ATTENTION = {"sdpa": "sdpa", "eager": "eager", "flash_attention_2": "flash", "flash_attention_3": "flash"}
# optimizer class names (torch, bitsandbytes) -> --optimizer
OPTIMIZERS = {"AdamW": "adamw", "Adam": "adamw", "AdamW8bit": "adamw-8bit", "PagedAdamW8bit": "paged-adamw-8bit",
              "PagedAdamW": "paged-adamw-32bit", "PagedAdamW32bit": "paged-adamw-32bit", "SGD": "sgd"}


def base_model(model):
    """The transformers model under a PEFT wrapper (the model itself otherwise)."""
    getter = getattr(model, "get_base_model", None)
    return getter() if callable(getter) else model


def model_config(model) -> tuple[str, dict]:
    """(name, config.json dict) of the model being trained."""
    config = base_model(model).config
    document = json.loads(config.to_json_string(use_diff=False))
    name = document.get("_name_or_path") or getattr(config, "name_or_path", "") or document.get("model_type", "model")
    return str(name), document


def optimizer_key(optimizer) -> str:
    """--optimizer of an optimizer object (accelerate's wrapper unwrapped).

    Raises:
        ConfigError: an optimizer the estimator does not model.
    """
    inner = getattr(optimizer, "optimizer", optimizer) if type(optimizer).__name__ == "AcceleratedOptimizer" else optimizer
    name = type(inner).__name__
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer {type(inner).__module__}.{name} is not modelled ({', '.join(OPTIMIZERS)} are)")
    return OPTIMIZERS[name]


def _adapter(model) -> tuple[str | None, dict]:
    """(adapter kind, its settings) from the active PEFT config; (None, {}) without PEFT."""
    configs = getattr(model, "peft_config", None)
    if not configs:
        return None, {}
    active = getattr(model, "active_adapter", None)
    active = active[0] if isinstance(active, (list, tuple)) else active
    config = configs.get(active) or next(iter(configs.values()))
    kind = str(getattr(config, "peft_type", "")).rsplit(".", 1)[-1].upper()
    if kind != "LORA":
        raise ConfigError(f"PEFT {kind} adapters are not modelled (LoRA and DoRA are)")
    targets = getattr(config, "target_modules", None) or ()
    targets = (targets,) if isinstance(targets, str) else tuple(sorted(targets))
    return ("dora" if getattr(config, "use_dora", False) else "lora"), {
        "rank": int(config.r), "alpha": float(config.lora_alpha), "dropout": float(config.lora_dropout), "targets": targets,
    }


def _four_bit(model) -> tuple[bool, bool, torch.dtype | None]:
    """(4-bit base, double quantization, compute dtype) from the bitsandbytes modules."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        if state is not None:
            return True, bool(getattr(state, "nested", False)), getattr(module, "compute_dtype", None)
    return False, False, None


def _weights_dtype(model, quantized: bool, compute: torch.dtype | None) -> torch.dtype:
    """The dtype the run computes in: a 4-bit base's compute dtype, else the frozen base's (the
    trainable weights' in full fine-tuning)."""
    if quantized:
        if compute is None:  # the Linear4bit modules carry it; else the quantization config says it
            quant = getattr(base_model(model).config, "quantization_config", None)
            raw = quant.get("bnb_4bit_compute_dtype") if isinstance(quant, dict) else getattr(quant, "bnb_4bit_compute_dtype", None)
            compute = getattr(torch, raw.replace("torch.", ""), None) if isinstance(raw, str) else raw
        return compute or torch.bfloat16
    frozen = [p for n, p in model.named_parameters() if "lora_" not in n and p.dtype.is_floating_point]
    return frozen[0].dtype if frozen else next(model.parameters()).dtype


def run_from_model(model, args, optimizer, batch: int, seq_len: int, device: str) -> tuple[RunConfig, list[str]]:
    """The RunConfig of `model` trained with `args` and `optimizer` on batch x seq_len tokens.

    Raises:
        ConfigError: something the estimator does not model (an adapter type, an optimizer, a dtype).
    """
    notes = []
    adapter, lora = _adapter(model)
    quantized, double_quant, compute = _four_bit(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if adapter is None and len(trainable) < len(list(model.parameters())):
        raise ConfigError("some parameters are frozen without a PEFT adapter (partial fine-tuning is not modelled)")
    from vramplan.planner.interop.common import method_for

    method = method_for(adapter, quantized)
    if method is None:
        raise ConfigError(f"no registered method trains a {adapter or 'full'} adapter on a {'4-bit' if quantized else '16-bit'} base")
    weights = DTYPES.get(_weights_dtype(model, quantized, compute))
    if weights is None:
        raise ConfigError(f"weights in {_weights_dtype(model, quantized, compute)} are not modelled")
    autocast = "bf16" if getattr(args, "bf16", False) else "fp16" if getattr(args, "fp16", False) else None
    precision = f"{autocast}-mixed" if weights == "fp32" and autocast else weights
    if weights != "fp32" and autocast and adapter is not None:
        from vramplan.planner.interop.common import AUTOCAST_NOTE

        notes.append(AUTOCAST_NOTE.format(amp=autocast))
    adapter_dtype = "fp32"
    if adapter is not None:
        lora_weights = [p for n, p in model.named_parameters() if "lora_A" in n]
        adapter_dtype = DTYPES.get(lora_weights[0].dtype, "fp32") if lora_weights else "fp32"
    attention = ATTENTION.get(str(getattr(base_model(model).config, "_attn_implementation", "sdpa")), None)
    if attention is None:
        notes.append(f"attention {base_model(model).config._attn_implementation!r}: estimated as sdpa")
        attention = "sdpa"
    base = base_model(model)  # transformers 5.24 renamed it; older ones have only the first name
    flag = "is_activation_checkpointing" if hasattr(type(base), "is_activation_checkpointing") else "is_gradient_checkpointing"
    ckpt = bool(getattr(base, flag, False))
    # the savers the TrainingArguments / SFTConfig switch on (planner/savers.py)
    savers = {
        "loss": "fused" if getattr(args, "use_liger_kernel", False) else "standard",
        "packing": bool(getattr(args, "padding_free", False) or getattr(args, "packing", False)) and attention != "eager",
        "offload_activations": bool(getattr(args, "activation_offloading", False)) and ckpt,
    }
    run = RunConfig(
        method=method, batch=batch, seq_len=seq_len, grad_ckpt=ckpt, optimizer=optimizer_key(optimizer),
        precision=precision, attention=attention, double_quant=double_quant if quantized else True,
        adapter_dtype=adapter_dtype, device_kind=device, **lora, **savers,
    )
    return run, notes
