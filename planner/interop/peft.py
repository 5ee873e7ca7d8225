"""A PEFT `adapter_config.json` (what `save_pretrained` writes beside the adapter weights).

Memory-relevant keys: peft_type (LORA), r, lora_alpha, lora_dropout, target_modules (names or
"all-linear"), use_dora, base_model_name_or_path; modules_to_save, layers_to_transform,
rank_pattern / alpha_pattern, bias and trainable_token_indices change memory in ways the
estimate leaves out. The file says nothing of the base's quantization, batch or sequence: give
those with flags, or a second --from file (a TRL/TrainingArguments config).
"""

from __future__ import annotations

from pathlib import Path

from .common import Reader, split_names

KEY = "peft"
NO_EFFECT = (
    "task_type", "inference_mode", "fan_in_fan_out", "init_lora_weights", "revision", "layers_pattern", "megatron_config",
    "megatron_core", "loftq_config", "use_qalora", "qalora_group_size", "runtime_config", "eva_config", "corda_config",
    "auto_mapping", "peft_version", "use_rslora", "alora_invocation_tokens", "arrow_config", "ensure_weight_tying",
    "lora_ga_config", "exclude_modules", "target_parameters",
)


def detect(document: dict) -> bool:
    return "peft_type" in document


def read(document: dict, path: Path):
    r = Reader(document, f"PEFT adapter config {path}")
    peft_type = str(r.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        r.problem("adapter", f"peft_type {peft_type}: only LoRA/DoRA adapters are modelled; pass --method")
    model = r.get("base_model_name_or_path", None)
    if model:
        r.set("model", str(model), "base_model_name_or_path")
    r.set("adapter", "dora" if r.bool("use_dora", False) else "lora", "use_dora", default=not r.has("use_dora"))
    r.note("adapter_config.json does not say whether the base is 4-bit: a 16-bit base is assumed (--method qlora / qdora for NF4)")
    rank = r.int("r", None)
    r.set("rank", rank, "r") if rank is not None else r.set_default("rank", 8, "r")
    alpha = r.float("lora_alpha", None)
    r.set("alpha", alpha, "lora_alpha") if alpha is not None else r.set_default("alpha", 8.0, "lora_alpha")
    dropout = r.float("lora_dropout", None)
    r.set("dropout", dropout, "lora_dropout") if dropout is not None else r.set_default("dropout", 0.0, "lora_dropout")
    targets = r.get("target_modules", None)
    if isinstance(targets, str) and targets != "all-linear":
        r.problem("targets", f"target_modules {targets!r} is a regular expression; pass --targets with the module names it matches")
    elif targets:
        r.set("targets", split_names(targets), "target_modules")
    else:
        r.set_default("targets", ("q_proj", "v_proj"), "target_modules")
        r.note("target_modules not set: PEFT's default for Llama-style models, q_proj and v_proj")
    rslora = r.bool("use_rslora", None)
    if rslora is not None:
        r.set("use_rslora", rslora, "use_rslora")
    r.skip("modules_to_save", "these modules train in full (weights, gradients, optimizer states): not counted")
    r.skip("layers_to_transform", "adapters on a subset of layers: estimated on every layer (an upper bound)")
    r.skip("rank_pattern", "per-module ranks: estimated at r everywhere")
    r.skip("alpha_pattern", "per-module alphas", when=lambda value: False)
    r.skip("bias", "trainable biases: not counted", when=lambda value: value not in ("none", None))
    r.skip("lora_bias", "a trainable bias on lora_B: not counted")
    r.skip("trainable_token_indices", "trainable embedding rows: not counted")
    r.skip("layer_replication", "replicated layers: not counted")
    r.ignore(*NO_EFFECT)
    return r.finish(KEY, str(path))
