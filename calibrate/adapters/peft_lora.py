"""LoRA and DoRA through peft: ``LoraConfig`` + ``get_peft_model``, saved with ``save_pretrained``.

peft's defaults are kept (``autocast_adapter_dtype=True``: adapters in fp32); ``run.adapter_dtype``
bf16/fp16 casts the adapter parameters afterwards.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch
from torch import nn

from . import MARK

ADAPTER_WEIGHTS = "adapter_model.safetensors"


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


def lora_target_kwargs(model: nn.Module, targets, rank: int, alpha: float) -> dict:
    """The ``LoraConfig`` keys that put LoRA on ``targets``: ``target_modules``, or, for a mixture of
    experts' router and fused experts (parameters, not Linears), ``target_parameters`` and their
    rank/alpha patterns (calibrate/moe_targets.py)."""
    from ..model_build import resolve_target_modules
    from ..moe_targets import moe_lora_kwargs

    return moe_lora_kwargs(model, targets, rank, alpha) or {"target_modules": resolve_target_modules(model, targets)}


def attach(model: nn.Module, run, meta: bool = False) -> nn.Module:
    """The ``PeftModel`` with LoRA (or DoRA, when the record's adapter is "dora") on ``run.targets``."""
    import peft

    from ..model_build import ADAPTER_DTYPES

    dora = run.method_record.adapter.name == "dora"
    targets = lora_target_kwargs(model, run.targets, run.rank, run.lora_alpha)
    lora_config = peft.LoraConfig(
        r=run.rank,
        lora_alpha=run.lora_alpha,
        lora_dropout=run.dropout,
        **targets,
        use_dora=dora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    dora_patch = _meta_dora_init() if (meta and dora and run.is_quantized) else contextlib.nullcontext()
    with warnings.catch_warnings(), dora_patch:
        warnings.simplefilter("ignore", UserWarning)
        model = peft.get_peft_model(model, lora_config, low_cpu_mem_usage=meta)
    adtype = ADAPTER_DTYPES[run.adapter_dtype]
    if adtype != torch.float32:
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.to(adtype)
    setattr(model, MARK, __name__)
    return model


def save(model, directory: Path, base_path: str | None = None, state_dict=None) -> None:
    """``save_pretrained``: adapter_config.json + adapter_model.safetensors, loadable by peft itself."""
    if base_path is not None:
        model.peft_config["default"].base_model_name_or_path = base_path
    model.save_pretrained(directory, **({"state_dict": state_dict} if state_dict is not None else {}))


def load(model, directory: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from vramplan.planner.errors import ConfigError

    result = set_peft_model_state_dict(model, load_file(str(directory / ADAPTER_WEIGHTS)))
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ConfigError(f"{directory} does not match this adapter (unexpected {unexpected[:3]}...); resume with the same settings")


def merge(base: nn.Module, directory: Path) -> nn.Module:
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(directory)).merge_and_unload()
