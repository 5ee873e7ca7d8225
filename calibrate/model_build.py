"""Build the training-ready model for one `RunConfig`, the way the bundled trainer does.

The model comes from a config dict (no hub, random weights):

    config = transformers.AutoConfig.for_model(**hf_config)
    model = AutoModelForCausalLM.from_config(config, dtype=..., attn_implementation=...)

then, per `run.method`:

* ``full``   every parameter trainable.
* ``lora`` / ``dora``  peft ``LoraConfig`` (``use_dora`` for dora) through ``get_peft_model`` with
  peft's defaults (``autocast_adapter_dtype=True``: adapters in fp32); ``run.adapter_dtype`` bf16/fp16
  casts the adapter parameters afterwards.
* ``qlora`` / ``qdora``  every decoder-layer ``nn.Linear`` becomes ``bnb.nn.Linear4bit`` (NF4,
  ``compress_statistics=run.double_quant``, compute dtype bf16 or fp16), lm_head stays as it is (what
  transformers' ``replace_with_bnb_linear`` does when loading with ``BitsAndBytesConfig``), then
  ``peft.prepare_model_for_kbit_training`` (which casts every non-4-bit bf16/fp16 parameter -
  embeddings, norms, lm_head - to fp32), then ``get_peft_model``.

Gradient checkpointing (``run.grad_ckpt``) uses ``use_reentrant=False`` and, for adapters,
``enable_input_require_grads``.

Weights dtype: bf16 -> bfloat16, fp16 -> float16, fp32 and the ``*-mixed`` precisions -> float32
(mixed precision autocasts the compute, the weights stay fp32).

``meta=True`` builds everything on the meta device (nothing allocated; 4-bit Linears keep an
unquantized meta ``Params4bit`` of the full shape) for the fake-tensor tracer.

Notes about what could not be reproduced on CPU are appended to ``model.vramplan_notes``.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from vramplan.planner.specs import RunConfig

WEIGHT_DTYPES = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
    "bf16-mixed": torch.float32,
    "fp16-mixed": torch.float32,
}
ADAPTER_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SHORT_NAMES = {
    "q": "q_proj",
    "k": "k_proj",
    "v": "v_proj",
    "o": "o_proj",
    "gate": "gate_proj",
    "up": "up_proj",
    "down": "down_proj",
}
ATTENTION_PARENTS = ("self_attn", "attn", "attention", "self_attention")
MLP_PARENTS = ("mlp", "feed_forward", "ffn")


def weight_dtype(run: RunConfig) -> torch.dtype:
    return WEIGHT_DTYPES[run.precision]


def compute_dtype(run: RunConfig) -> torch.dtype:
    """bnb 4-bit compute dtype (and the autocast dtype of the *-mixed precisions)."""
    return torch.float16 if run.precision.startswith("fp16") else torch.bfloat16


def attn_implementation(run: RunConfig, device="cpu") -> tuple[str, str | None]:
    """The attention kernel to ask transformers for, and a note when it differs from the run's."""
    if run.attention == "flash" and torch.device(device).type != "cuda":
        return "sdpa", "attention 'flash' is not available on CPU: built with 'sdpa' instead"
    if run.attention == "flash":
        return "flash_attention_2", None
    return run.attention, None


def _linear_types() -> tuple[type, ...]:
    types: list[type] = [nn.Linear]
    try:
        import bitsandbytes as bnb

        types.append(bnb.nn.Linear4bit)
    except ImportError:  # pragma: no cover - bitsandbytes is a dependency
        pass
    return tuple(types)


def decoder_linear_names(model: nn.Module) -> dict[str, str]:
    """Leaf names of the Linears inside decoder layers -> their group ("attention" / "mlp" / "other")."""
    lin = _linear_types()
    out: dict[str, str] = {}
    for name, module in model.named_modules():
        if not isinstance(module, lin) or ".layers." not in f".{name}":
            continue
        parts = name.split(".")
        parent = parts[-2] if len(parts) > 1 else ""
        group = "attention" if parent in ATTENTION_PARENTS else "mlp" if parent in MLP_PARENTS else "other"
        out.setdefault(parts[-1], group)
    return out


def resolve_target_modules(model: nn.Module, targets) -> list[str] | str:
    """`run.targets` -> peft ``target_modules`` for this model.

    ``("all-linear",)`` alone is passed through as peft's own "all-linear"; presets "attention" /
    "mlp" expand to the Linears of that group in the decoder layers; short names ("q", "gate", ...)
    get their ``_proj`` suffix; "lm_head" is kept.
    """
    targets = tuple(targets)
    if targets == ("all-linear",):
        return "all-linear"
    names = decoder_linear_names(model)
    chosen: list[str] = []

    def add(name: str) -> None:
        if name not in chosen:
            chosen.append(name)

    for target in targets:
        if target == "all-linear":
            for name in names:
                add(name)
        elif target in ("attention", "mlp"):
            group = [n for n, g in names.items() if g == target]
            if not group:
                raise ValueError(f"target preset {target!r} matches no Linear in this model ({sorted(names)})")
            for name in group:
                add(name)
        elif target == "lm_head":
            add("lm_head")
        elif target in names:
            add(target)
        elif SHORT_NAMES.get(target) in names:
            add(SHORT_NAMES[target])
        elif f"{target}_proj" in names:
            add(f"{target}_proj")
        else:
            raise ValueError(f"target {target!r} matches no Linear in this model ({sorted(names)})")
    return chosen


def _output_embedding_names(model: nn.Module) -> set[str]:
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {name for name, module in model.named_modules() if out is not None and module is out}


def quantize_decoder_linears(model: nn.Module, run: RunConfig, meta: bool = False) -> int:
    """Replace every decoder-layer ``nn.Linear`` by an NF4 ``bnb.nn.Linear4bit`` in place.

    Mirrors transformers' ``replace_with_bnb_linear`` + ``Bnb4bitQuantize``: the new module is
    made on meta, then its weight becomes ``Params4bit(old_weight, ...)`` moved to the device, which
    quantizes it (uint8 storage holding two 4-bit codes per byte, plus a ``quant_state``). Each
    layer's full-precision weight is dropped as soon as it is quantized. lm_head (the output
    embeddings) is never converted. Returns the number of Linears replaced.
    """
    import bitsandbytes as bnb

    skip = _output_embedding_names(model)
    cdtype = compute_dtype(run)
    names = [
        name
        for name, module in model.named_modules()
        if type(module) is nn.Linear and name not in skip and ".layers." in f".{name}"
    ]
    for name in names:  # one layer at a time: each full-precision weight is freed once quantized
        old = model.get_submodule(name)
        with torch.device("meta"):
            new = bnb.nn.Linear4bit(
                old.in_features,
                old.out_features,
                old.bias is not None,
                compute_dtype=cdtype,
                compress_statistics=run.double_quant,
                quant_type="nf4",
                quant_storage=torch.uint8,
            )
        new.source_cls = nn.Linear
        new.requires_grad_(False)
        param = bnb.nn.Params4bit(old.weight.data, requires_grad=False, **new.weight.__dict__)
        if not meta:
            param = param.to(old.weight.device)  # quantizes: uint8 data + quant_state
        new.weight = param
        if old.bias is not None:
            new.bias = nn.Parameter(old.bias.data, requires_grad=False)
        model.set_submodule(name, new)
        del old, new, param
    model.is_loaded_in_4bit = True
    return len(names)


def check_4bit_weights(model: nn.Module) -> int:
    """Assert every ``Linear4bit`` holds a quantized uint8 ``Params4bit``; returns how many."""
    import bitsandbytes as bnb

    count = 0
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            w = module.weight
            if not isinstance(w, bnb.nn.Params4bit) or w.dtype != torch.uint8 or not w.bnb_quantized:
                raise AssertionError(f"{name}.weight is {type(w).__name__} {w.dtype}, not a quantized uint8 Params4bit")
            if w.quant_state is None:
                raise AssertionError(f"{name}.weight has no quant_state")
            count += 1
    return count


@contextlib.contextmanager
def _meta_dora_init():
    """DoRA's init deep-copies and dequantizes a 4-bit base layer, impossible on meta: make the
    magnitude vector (out_features,) on meta in the dtype the real init produces instead."""
    from peft.tuners.lora import dora

    original = dora.DoraLinearLayer.update_layer

    def update_layer(self, *, base_layer, lora_A, lora_B, scaling, place_on_cpu=False):
        dtype = torch.promote_types(base_layer.weight.dtype, lora_A.dtype)
        self.weight = nn.Parameter(torch.empty(base_layer.out_features, dtype=dtype, device="meta"), requires_grad=True)

    dora.DoraLinearLayer.update_layer = update_layer
    try:
        yield
    finally:
        dora.DoraLinearLayer.update_layer = original


def _enable_grad_ckpt(model: nn.Module) -> None:
    kwargs = {"use_reentrant": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # 5.x deprecates the alias, same code path
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def build_model(hf_config: dict, run: RunConfig, device="cpu", meta: bool = False) -> nn.Module:
    """The model ready for ``model.train()`` + optimizer over ``requires_grad`` parameters.

    Returns the transformers model (method full) or the ``PeftModel`` (adapters). The list
    ``model.vramplan_notes`` says where the build differs from the run (e.g. flash -> sdpa on CPU).
    """
    import transformers
    from transformers import AutoModelForCausalLM

    notes: list[str] = []
    dev = torch.device("meta") if meta else torch.device(device)
    attn, note = attn_implementation(run, "cpu" if meta else device)
    if note:
        notes.append(note)
    config = transformers.AutoConfig.for_model(**hf_config)
    config.use_cache = False  # training keeps no KV cache (transformers warns about it under checkpointing)
    wdtype = weight_dtype(run)
    ctx = torch.device("meta") if meta else (contextlib.nullcontext() if dev.type == "cpu" else torch.device(dev))
    with ctx:
        model = AutoModelForCausalLM.from_config(config, dtype=wdtype, attn_implementation=attn)
    if run.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        if run.grad_ckpt:
            _enable_grad_ckpt(model)
        model.train()
        model.vramplan_notes = notes
        return model

    import peft

    if run.is_quantized:
        quantize_decoder_linears(model, run, meta=meta)
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=run.grad_ckpt)
    else:
        for p in model.parameters():
            p.requires_grad_(False)

    target_modules = resolve_target_modules(model, run.targets)
    lora_config = peft.LoraConfig(
        r=run.rank,
        lora_alpha=run.lora_alpha,
        lora_dropout=run.dropout,
        target_modules=target_modules,
        use_dora=run.is_dora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    if run.grad_ckpt:
        _enable_grad_ckpt(model)
        model.enable_input_require_grads()
    dora_patch = _meta_dora_init() if (meta and run.is_quantized and run.is_dora) else contextlib.nullcontext()
    with warnings.catch_warnings(), dora_patch:
        warnings.simplefilter("ignore", UserWarning)
        model = peft.get_peft_model(model, lora_config, low_cpu_mem_usage=meta)
    adtype = ADAPTER_DTYPES[run.adapter_dtype]
    if adtype != torch.float32:
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.to(adtype)
    model.train()
    model.vramplan_notes = notes
    return model


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
