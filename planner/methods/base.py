"""How the base weights are held: frozen 16/32-bit, 4-bit NF4, or trainable (full fine-tuning)."""

from __future__ import annotations

import math

from ..breakdown import BACKWARD, Term, grad_phases
from ..dtypes import DtypePlan
from ..specs import ModelSpec, RunConfig
from .record import BaseWeights

NF4_BLOCK = 64  # bitsandbytes blocksize for 4-bit weights
DQ_BLOCK = 256  # double quantization groups 256 absmax values under one fp32 constant
FP32 = 4


def dense_base(model: ModelSpec, dt: DtypePlan) -> list[Term]:
    """The base weights; a MoE model's router and experts as their own term (`experts_terms`)."""
    n = model.base_params - model.expert_params
    return [Term("weights/base", n * dt.weight_bytes, f"{n:,} params x {dt.weight_bytes} B"), *experts_terms(model, dt.weight_bytes)]


def experts_terms(model: ModelSpec, bytes_per_param: int) -> list[Term]:
    """All E experts of every layer stay resident, whichever k a token uses (planner/moe.py)."""
    n = model.expert_params
    if not n:
        return []
    note = f"router + {model.num_experts} experts per layer, all resident: {n:,} params x {bytes_per_param} B"
    return [Term("experts/weights", n * bytes_per_param, note)]


def _frozen_terms(model: ModelSpec, run: RunConfig, dt: DtypePlan) -> list[Term]:
    return dense_base(model, dt)


def _trainable_terms(model: ModelSpec, run: RunConfig, dt: DtypePlan) -> list[Term]:
    """Every parameter trains; gradients take the parameter dtype."""
    head = model.lm_head_params  # an untied lm_head's gradient is written first, the rest by the end
    rest = model.base_params - head
    terms = [
        *dense_base(model, dt),
        Term("grads/trainable", rest * dt.weight_bytes, f"{rest:,} grads x {dt.weight_bytes} B", grad_phases(run.grad_accum)),
    ]
    if head:
        terms.append(
            Term("grads/lm_head", head * dt.weight_bytes, "lm_head gradient, written at the start of backward", grad_phases(run.grad_accum) | {BACKWARD})
        )
    return terms


def nf4_constants_bytes(numel: int, double_quant: bool) -> int:
    """Block constants of one NF4 tensor (QLoRA paper §3, bitsandbytes QuantState).

    Without double quant: one fp32 absmax per 64 weights. With it: one uint8 absmax per block,
    one fp32 absmax per 256 blocks, a 256-entry fp32 code table and an fp32 offset.
    """
    blocks = math.ceil(numel / NF4_BLOCK)
    if not double_quant:
        return FP32 * blocks
    return blocks + FP32 * math.ceil(blocks / DQ_BLOCK) + FP32 * 256 + FP32


def _nf4_terms(model: ModelSpec, run: RunConfig, dt: DtypePlan) -> list[Term]:
    """4-bit decoder Linears (0.5 B/param), their constants, and everything left unquantized."""
    layers = model.linear_layers  # DeepSeek: dense-layer and shared-expert Linears sit in some layers only
    constants = sum(
        layers(linear) * nf4_constants_bytes(linear.in_features * linear.out_features, run.double_quant) for linear in model.linears
    )
    biases = sum(layers(linear) * linear.out_features for linear in model.linears if linear.bias)
    packed = sum(layers(linear) * linear.in_features * linear.out_features for linear in model.linears) // 2
    unquantized = model.embed_params + model.lm_head_params + model.norm_params + model.extra_params + biases
    dq = "double-quant" if run.double_quant else "no double-quant"
    # fused experts and the router are no nn.Linear: bitsandbytes leaves them 16-bit, and
    # prepare_model_for_kbit_training upcasts them like the rest
    return [
        Term("weights/base", packed, "NF4: two weights per byte in the decoder Linears"),
        Term("weights/quant_constants", constants, f"absmax per {NF4_BLOCK}-weight block ({dq})"),
        Term(
            "weights/unquantized",
            unquantized * dt.unquantized_bytes,
            f"embeddings, lm_head, norms, biases: {unquantized:,} params x {dt.unquantized_bytes} B "
            + ("(prepare_model_for_kbit_training upcasts to fp32)" if run.kbit_upcast else "(kept 16-bit: --no-kbit-upcast)"),
        ),
    ] + experts_terms(model, dt.unquantized_bytes)


FROZEN = BaseWeights("frozen", quantized=False, trainable=False, terms=_frozen_terms)
TRAINABLE = BaseWeights("trainable", quantized=False, trainable=True, terms=_trainable_terms, reason="full fine-tuning fits: every weight trains")
NF4 = BaseWeights(
    "nf4",
    quantized=True,
    trainable=False,
    terms=_nf4_terms,
    speed=0.8,  # dequantizing NF4 weights on every matmul
    reason="4-bit NF4 base: ~0.5 B/param frees memory for batch and sequence",
)
