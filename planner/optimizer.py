"""Optimizer states and the temporaries of `optimizer.step()`.

torch AdamW keeps exp_avg and exp_avg_sq in the parameter's dtype. On CUDA it defaults to
the foreach implementation, whose `_foreach_sqrt(exp_avg_sqs)` materialises one state-sized
list during the step; on CPU it loops per tensor (sqrt then divide: two copies of the
largest tensor). bitsandbytes' 8-bit Adam keeps uint8 states with an fp32 absmax per
256 values for tensors of 4096+ elements and fp32 states below; its paged variants place
states of 100k+ elements in CUDA unified memory, which torch's allocator does not see.
"""

from __future__ import annotations

import math

from .breakdown import ALL_PHASES, DEVICE, OPTIMIZER, Term
from .dtypes import DtypePlan
from .specs import ModelSpec, RunConfig

BNB_MIN_8BIT_SIZE = 4096
BNB_BLOCK = 256
BNB_PAGED_MIN_SIZE = 100_000
FP32 = 4


def trainable_tensors(model: ModelSpec, run: RunConfig, adapted: tuple[str, ...]) -> list[tuple[int, int]]:
    """(numel, how many) of every trainable tensor, as the method's record declares them."""
    method = run.method_record
    tensors = full_model_tensors(model) if method.trains_base else []
    if method.adapter is not None:
        tensors += method.adapter.tensors(model, run, adapted)
    return tensors


def full_model_tensors(model: ModelSpec) -> list[tuple[int, int]]:
    """Every parameter tensor of the model (full fine-tuning)."""
    tensors = [(model.embed_params, 1), (model.hidden_size, 1)]  # embedding, final norm
    if model.lm_head_params:
        tensors.append((model.lm_head_params, 1))
    for linear in model.linears:
        tensors.append((linear.in_features * linear.out_features, model.linear_layers(linear)))
        if linear.bias:
            tensors.append((linear.out_features, model.linear_layers(linear)))
    tensors.append((model.norm_params_per_layer, model.num_layers))  # lumped: same bytes
    if model.num_experts:  # a sparse MLP: the router and the two fused expert stacks (planner/moe.py)
        e, h, i = model.num_experts, model.hidden_size, model.expert_intermediate_size
        n = model.sparse_layers  # DeepSeek's leading dense layers have none
        tensors += [(e * h, n), (e * 2 * i * h, n), (e * h * i, n)]
    return tensors


def _bnb_state_bytes(numel: int, eight_bit: bool) -> int:
    if eight_bit and numel >= BNB_MIN_8BIT_SIZE:
        return 2 * (numel + FP32 * math.ceil(numel / BNB_BLOCK))
    return 2 * FP32 * numel


def optimizer_terms(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...]) -> list[Term]:
    """States (live through the whole steady-state step) and step temporaries."""
    tensors = trainable_tensors(model, run, adapted)
    param_bytes = dt.adapter_bytes  # the trainable tensors' dtype (the weights' for full fine-tuning)
    n_trainable = sum(numel * count for numel, count in tensors)
    if run.optimizer == "sgd":
        return [Term("optimizer/states", 0, "SGD without momentum keeps no state")]
    if run.optimizer == "adamw":
        states = 2 * n_trainable * param_bytes
        if run.device_kind == "cuda":
            temp = n_trainable * param_bytes
            temp_note = "foreach AdamW: sqrt(exp_avg_sq) for every tensor at once"
        else:
            temp = 2 * max(numel for numel, _ in tensors) * param_bytes
            temp_note = "per-tensor AdamW on CPU: sqrt and divide of the largest tensor"
        return [
            Term("optimizer/states", states, f"Adam m and v: 2 x {n_trainable:,} x {param_bytes} B (param dtype)"),
            Term("optimizer/step_temporaries", temp, temp_note, frozenset({OPTIMIZER})),
        ]
    eight_bit = "8bit" in run.optimizer
    paged = run.optimizer.startswith("paged") and run.device_kind == "cuda"
    resident, in_pages = 0, 0
    for numel, count in tensors:
        size = count * _bnb_state_bytes(numel, eight_bit)
        if paged and numel >= BNB_PAGED_MIN_SIZE:
            in_pages += size
        else:
            resident += size
    label = "8-bit (uint8 + absmax/256)" if eight_bit else "32-bit"
    terms = [Term("optimizer/states", resident, f"bitsandbytes {label} Adam states", ALL_PHASES)]
    if paged:
        terms.append(Term("optimizer/paged_states", in_pages, "paged: CUDA unified memory, outside torch's allocator", ALL_PHASES, DEVICE))
    return terms
