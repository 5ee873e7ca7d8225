"""Build the training-ready model for one `RunConfig`, the way the bundled trainer does.

The model comes from a config dict (no hub, random weights):

    config = transformers.AutoConfig.for_model(**hf_config)
    model = AutoModelForCausalLM.from_config(config, dtype=..., attn_implementation=...)

then, as the method's record says (`run.method_record`):

* a trainable base (full fine-tuning): every parameter trainable.
* a frozen base: every parameter frozen, then the adapter kind's torch module (`calibrate.adapters`)
  attaches its trainable modules (peft ``LoraConfig`` for LoRA/DoRA).
* an NF4 base: every decoder-layer ``nn.Linear`` becomes ``bnb.nn.Linear4bit`` (NF4,
  ``compress_statistics=run.double_quant``, compute dtype bf16 or fp16), lm_head stays as it is (what
  transformers' ``replace_with_bnb_linear`` does when loading with ``BitsAndBytesConfig``), then
  ``peft.prepare_model_for_kbit_training`` (which casts every non-4-bit bf16/fp16 parameter -
  embeddings, norms, lm_head - to fp32; ``kbit_upcast=False`` skips it and only freezes), then the
  adapter is attached.

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
import functools
import warnings

import torch
from torch import nn

from vramplan.planner.families import Family, family_of
from vramplan.planner.specs import RunConfig
from vramplan.planner.targets import short_name

from .adapters import adapter_module

WEIGHT_DTYPES = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
    "bf16-mixed": torch.float32,
    "fp16-mixed": torch.float32,
}
ADAPTER_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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


def model_family(model: nn.Module) -> Family | None:
    """The family record (`planner.families`) of a built model, None when it has none."""
    return family_of(getattr(getattr(model, "config", None), "model_type", None))


def decoder_linear_names(model: nn.Module) -> dict[str, str]:
    """Leaf names of the Linears inside decoder layers -> their group ("attention" / "mlp"), in layer order.

    The family's record says which they are, the same record the planner counts with; a model
    without one is read off its first decoder layer the way the planner's inventory reads it.
    """
    family = model_family(model)
    if family is not None:
        return dict(family.groups)
    from vramplan.planner.inventory import layer_linears

    return {linear.name: linear.group for linear in layer_linears(model)}


def resolve_target_modules(model: nn.Module, targets) -> list[str] | str:
    """`run.targets` -> peft ``target_modules`` for this model.

    ``("all-linear",)`` alone is passed through as peft's own "all-linear"; presets "attention" /
    "mlp" expand to the Linears of that group in the decoder layers; short names ("q", "gate", ...)
    become the module they stand for in the family's record (else get a ``_proj`` suffix);
    "lm_head" is kept.
    """
    targets = tuple(targets)
    if targets == ("all-linear",):
        return "all-linear"
    names = decoder_linear_names(model)
    family = model_family(model)
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
        elif (module := short_name(target, tuple(names), family)) is not None:
            add(module)
        else:
            raise ValueError(f"target {target!r} matches no Linear in this model ({sorted(names)})")
    return chosen


def _output_embedding_names(model: nn.Module) -> set[str]:
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {name for name, module in model.named_modules() if out is not None and module is out}


def quantize_decoder_linears(model: nn.Module, run: RunConfig, meta: bool = False, include=None) -> int:
    """Replace every decoder-layer ``nn.Linear`` by an NF4 ``bnb.nn.Linear4bit`` in place.

    Mirrors transformers' ``replace_with_bnb_linear`` + ``Bnb4bitQuantize``: the new module is
    made on meta, then its weight becomes ``Params4bit(old_weight, ...)`` moved to the device, which
    quantizes it (uint8 storage holding two 4-bit codes per byte, plus a ``quant_state``). Each
    layer's full-precision weight is dropped as soon as it is quantized. lm_head (the output
    embeddings) is never converted. Returns the number of Linears replaced. ``include(name)``, when
    given, chooses the Linears instead of the ``.layers.`` rule (a VLM quantizes its LLM by full path).
    """
    import bitsandbytes as bnb

    skip = _output_embedding_names(model)
    cdtype = compute_dtype(run)
    names = [
        name
        for name, module in model.named_modules()
        if type(module) is nn.Linear and name not in skip and (include(name) if include else ".layers." in f".{name}")
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


def _save_on_cpu_checkpoint(function, *args, **kwargs):
    from torch.utils.checkpoint import checkpoint

    with torch.autograd.graph.save_on_cpu(pin_memory=False):
        return checkpoint(function, *args, **kwargs)


def _enable_grad_ckpt(model: nn.Module, offload: bool = False) -> None:
    kwargs = {"use_reentrant": False}
    if offload and torch.cuda.is_available():  # --offload-activations: each checkpoint under save_on_cpu (transformers 5)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, offload=True)
        return
    if offload:  # the same structure without pinned memory, which needs an accelerator (on CPU nothing moves)
        model._set_gradient_checkpointing(enable=True, gradient_checkpointing_func=functools.partial(_save_on_cpu_checkpoint, **kwargs))
        return
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
    family = family_of(hf_config.get("model_type"))
    if attn == "sdpa" and family is not None and not family.sdpa:  # the planner estimates eager too
        attn = "eager"
        notes.append(f"{family.title} has no SDPA path in transformers: built with 'eager' attention")
    config = transformers.AutoConfig.for_model(**hf_config)
    config.use_cache = False  # training keeps no KV cache (transformers warns about it under checkpointing)
    wdtype = weight_dtype(run)
    ctx = torch.device("meta") if meta else (contextlib.nullcontext() if dev.type == "cpu" else torch.device(dev))
    with ctx:
        # transformers 4.x names the load dtype `torch_dtype` (5.x: `dtype`)
        dtype_kwarg = "torch_dtype" if transformers.__version__.startswith("4.") else "dtype"
        model = AutoModelForCausalLM.from_config(config, **{dtype_kwarg: wdtype}, attn_implementation=attn)
    method = run.method_record
    if method.quantizes_base:
        import peft

        quantize_decoder_linears(model, run, meta=meta)
        if run.kbit_upcast:
            model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=run.grad_ckpt)
        else:  # --no-kbit-upcast: its freezing without its fp32 upcast of the 16-bit weights
            for p in model.parameters():
                p.requires_grad_(False)
    else:
        for p in model.parameters():
            p.requires_grad_(method.trains_base)
    if run.grad_ckpt:
        _enable_grad_ckpt(model, offload=run.offload_activations)
        if method.adapter is not None:
            model.enable_input_require_grads()  # a frozen embedding must still pass gradients back
    if method.adapter is not None:
        model = adapter_module(run).attach(model, run, meta=meta)
    model.train()
    model.vramplan_notes = notes
    return model


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
