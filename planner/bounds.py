"""Bounds that mean something: what kind of model a config is, and run settings the model's shape allows.

The dataclasses check each value on its own (rank > 0, dropout in [0, 1)); these checks need
the model: a LoRA rank above the layer's width adds nothing (the update's rank is at most the
width), a bottleneck wider than the model is not a bottleneck, and a micro-batch whose tokens
overflow a 32-bit index cannot run. Config files are checked before they are counted, so a
malformed number is an error that names the file and the key, not a traceback.
"""

from __future__ import annotations

import math

from .errors import ConfigError, UnknownModelError
from .families import FAMILIES
from .methods import METHODS

# model_types that are encoders (masked-LM / classification), not causal decoders
ENCODER_TYPES = {
    "bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "xlm-roberta", "camembert",
    "mpnet", "ernie", "modernbert", "xlm", "flaubert", "longformer", "big_bird", "convbert", "funnel", "layoutlm",
    "mobilebert", "squeezebert", "nezha", "roformer", "canine", "luke", "megatron-bert", "rembert", "data2vec-text",
}
ENCODER_HEADS = ("ForMaskedLM", "ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering", "ForMultipleChoice")
# config keys that must be whole numbers > 0 when present (the architecture's sizes)
SIZE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size", "head_dim")
REQUIRED_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
MAX_TOKENS_PER_STEP = 2**31 - 1  # batch x seq-len indexes a 32-bit position in embedding and loss kernels


def check_causal_lm(config: dict, label: str) -> None:
    """Refuse configs that are not decoder-only causal LMs (BERT-style encoders, T5/BART encoder-decoders).

    Raises:
        UnknownModelError: the config describes an encoder or an encoder-decoder.
    """
    model_type = str(config.get("model_type", ""))
    architectures = [str(a) for a in config.get("architectures") or [] if isinstance(a, str)]
    what = f"model_type {model_type!r}" + (f" ({', '.join(architectures)})" if architectures else "")
    plans = "vramplan plans decoder-only causal-LM fine-tuning (Llama, Qwen, Mistral, Gemma, Phi, ...); pass such a model"
    if config.get("is_encoder_decoder") is True:
        raise UnknownModelError(f"{label}: {what} is an encoder-decoder model, not a causal decoder; {plans}")
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in architectures)
    if model_type in ENCODER_TYPES and not (causal and config.get("is_decoder") is True):
        raise UnknownModelError(f"{label}: {what} is an encoder, not a causal decoder; {plans}")
    if architectures and not causal and all(a.endswith(ENCODER_HEADS) for a in architectures):
        raise UnknownModelError(f"{label}: {what} is a masked-LM or classification model, not a causal decoder; {plans}")


def check_config_sizes(config: dict, label: str) -> None:
    """Every architecture size present in the config is a whole number > 0, and the heads divide the width.

    Raises:
        UnknownModelError: every bad key at once, with the file it came from.
    """
    sources = [config] + ([config["text_config"]] if isinstance(config.get("text_config"), dict) else [])
    problems = []
    if config.get("model_type") in FAMILIES:  # counted analytically: these sizes must be there
        missing = [key for key in REQUIRED_KEYS if not any(key in source for source in sources)]
        if missing:
            problems.append(f"no {', '.join(missing)} (a {config['model_type']} config.json has them)")
    for source in sources:
        for key in SIZE_KEYS:
            if key not in source or source[key] is None:
                continue
            value = source[key]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                problems.append(f"{key} is {value!r}, not a whole number greater than 0")
        hidden, heads, kv = source.get("hidden_size"), source.get("num_attention_heads"), source.get("num_key_value_heads")
        if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (hidden, heads)) and not source.get("head_dim"):
            if hidden % heads:
                problems.append(f"hidden_size {hidden} is not divisible by num_attention_heads {heads}")
        if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (heads, kv)) and heads % kv:
            problems.append(f"num_attention_heads {heads} is not divisible by num_key_value_heads {kv}")
    if problems:
        raise UnknownModelError(f"{label}: {'; '.join(problems)}; fix the config.json or re-download it")


def check_run_bounds(model, run) -> None:
    """Settings the model's shape allows (`model` a ModelSpec, `run` a RunConfig).

    Raises:
        ConfigError: every problem at once: a rank above the model's width, an adapter wider than
            the model, a non-finite alpha, more tokens per micro-batch than a step can index.
    """
    problems = []
    if run.uses_rank and run.rank > model.hidden_size:
        problems.append(
            f"--rank {run.rank} is above the model's width ({model.hidden_size:,}): a LoRA update of a layer that wide "
            f"has rank at most {model.hidden_size:,}; use --rank {model.hidden_size} or less (8-64 is typical)"
        )
    if run.alpha is not None and not math.isfinite(run.alpha):
        problems.append(f"--alpha must be a finite number, got {run.alpha!r}")
    for option in run.method_record.all_options:
        value = dict(run.method_options).get(option.name)
        if option.kind is int and isinstance(value, int) and value > model.hidden_size:
            problems.append(f"{option.flag} {value} is wider than the model ({model.hidden_size:,}); use {option.flag} {model.hidden_size} or less")
    if run.batch * run.seq_len > MAX_TOKENS_PER_STEP:
        problems.append(
            f"--batch {run.batch} x --seq-len {run.seq_len} = {run.batch * run.seq_len:,} tokens per micro-batch, "
            "more than one step can index (2^31); lower --batch or --seq-len"
        )
    if problems:
        raise ConfigError("; ".join(problems))


# flag -> the run field, and which methods it applies to
_SCOPED = {
    "--rank": ("rank", lambda m: m.adapter is not None and m.adapter.uses_rank),
    "--alpha": ("alpha", lambda m: m.adapter is not None and m.adapter.uses_rank),
    "--dropout": ("dropout", lambda m: m.adapter is not None and m.adapter.uses_rank),
    "--targets": ("targets", lambda m: m.adapter is not None and m.adapter.uses_rank),
    "--adapter-dtype": ("adapter_dtype", lambda m: m.adapter is not None),
    "--double-quant/--no-double-quant": ("double_quant", lambda m: m.quantizes_base),
}


def inapplicable_options(typed: set[str], methods: tuple[str, ...]) -> list[str]:
    """Notes for flags given that none of `methods` uses, e.g. `--rank` with full fine-tuning.

    Args:
        typed: names of the run fields and method options given on the command line.
        methods: the method keys being planned.
    """
    records = [METHODS[key] for key in methods if key in METHODS]
    titles = ", ".join(r.title for r in records)
    notes = []
    for flag, (name, applies) in _SCOPED.items():
        if name in typed and not any(applies(r) for r in records):
            notes.append(f"{flag} does not apply to {titles} (no {'4-bit base' if name == 'double_quant' else 'LoRA-style adapter'}); ignored")
    for key in sorted(typed):
        options = {o.name: o for r in METHODS.values() for o in r.all_options}
        if key in options and not any(key in {o.name for o in r.all_options} for r in records):
            notes.append(f"{options[key].flag} does not apply to {titles}; ignored")
    return notes
