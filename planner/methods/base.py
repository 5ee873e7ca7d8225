"""Terms several methods share: 16/32-bit base weights, 4-bit storage, adapters."""

from __future__ import annotations

import math

from ..breakdown import ALL_PHASES, BACKWARD_END, OPTIMIZER, Term
from ..dtypes import DtypePlan
from ..specs import ModelSpec, RunConfig
from ..targets import adapter_params

NF4_BLOCK = 64  # bitsandbytes blocksize for 4-bit weights
DQ_BLOCK = 256  # double quantization groups 256 absmax values under one fp32 constant
FP32 = 4


def dense_base(model: ModelSpec, dt: DtypePlan) -> Term:
    return Term(
        "weights/base",
        model.base_params * dt.weight_bytes,
        f"{model.base_params:,} params x {dt.weight_bytes} B",
    )


def nf4_constants_bytes(numel: int, double_quant: bool) -> int:
    """Block constants of one NF4 tensor (QLoRA paper §3, bitsandbytes QuantState).

    Without double quant: one fp32 absmax per 64 weights. With it: one uint8 absmax per block,
    one fp32 absmax per 256 blocks, a 256-entry fp32 code table and an fp32 offset.
    """
    blocks = math.ceil(numel / NF4_BLOCK)
    if not double_quant:
        return FP32 * blocks
    return blocks + FP32 * math.ceil(blocks / DQ_BLOCK) + FP32 * 256 + FP32


def quantized_base(model: ModelSpec, run: RunConfig, dt: DtypePlan) -> list[Term]:
    """4-bit decoder Linears (0.5 B/param), their constants, and everything left unquantized."""
    constants = model.num_layers * sum(
        nf4_constants_bytes(linear.in_features * linear.out_features, run.double_quant) for linear in model.linears
    )
    biases = model.num_layers * sum(linear.out_features for linear in model.linears if linear.bias)
    packed = model.num_layers * sum(linear.in_features * linear.out_features for linear in model.linears) // 2
    unquantized = model.embed_params + model.lm_head_params + model.norm_params + model.extra_params + biases
    dq = "double-quant" if run.double_quant else "no double-quant"
    return [
        Term("weights/base", packed, "NF4: two weights per byte in the decoder Linears"),
        Term("weights/quant_constants", constants, f"absmax per {NF4_BLOCK}-weight block ({dq})"),
        Term(
            "weights/unquantized",
            unquantized * dt.unquantized_bytes,
            f"embeddings, lm_head, norms, biases: {unquantized:,} params x {dt.unquantized_bytes} B "
            "(prepare_model_for_kbit_training upcasts to fp32)",
        ),
    ]


def adapter_terms(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...]) -> list[Term]:
    """Adapter weights (live always) and their gradients (from backward through the step)."""
    n = adapter_params(model, adapted, run.rank, run.is_dora)
    kind = "DoRA: LoRA A/B + magnitude" if run.is_dora else "LoRA A/B"
    return [
        Term("weights/adapter", n * dt.adapter_bytes, f"{kind}: {n:,} params x {dt.adapter_bytes} B (peft keeps fp32 by default)"),
        # written layer by layer during backward: at its start (the recomputed top layer) almost none exist
        Term("grads/trainable", n * dt.adapter_bytes, "one gradient per adapter param", frozenset({BACKWARD_END, OPTIMIZER})),
    ]


__all__ = ["ALL_PHASES", "adapter_terms", "dense_base", "quantized_base", "nf4_constants_bytes"]
