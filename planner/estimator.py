"""The estimator: a model, a run and a GPU in; a breakdown of named terms out."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .activations import (
    checkpoint_inputs_bytes,
    final_norm_bytes,
    first_layer_savings,
    layer_activations,
    layer_transient_bytes,
    logits_bytes,
)
from .breakdown import BACKWARD, BACKWARD_END, FORWARD, OPTIMIZER, MemoryBreakdown, Term
from .dtypes import DtypePlan, dtype_plan
from .optimizer import optimizer_terms
from .overhead import Corrections, overhead_terms
from .savers import checkpoint_terms, loss_terms
from .specs import GpuSpec, ModelSpec, RunConfig

INT64 = 8
DEFAULT_CORRECTIONS = Corrections()


@dataclass(frozen=True)
class Estimate:
    """One estimate: what was asked, what it resolved to, and the breakdown."""

    model: ModelSpec
    run: RunConfig
    gpu: GpuSpec | None
    adapted: tuple[str, ...]  # where the adapter sits: wrapped Linears or insertion points (empty for full)
    breakdown: MemoryBreakdown
    calibration: str

    @property
    def trainable_params(self) -> int:
        method = self.run.method_record
        adapter = sum(n * count for n, count in method.adapter.tensors(self.model, self.run, self.adapted)) if method.adapter else 0
        return (self.model.base_params if method.trains_base else 0) + adapter

    @property
    def fits(self) -> bool | None:
        if self.gpu is None:
            return None
        return self.breakdown.device_used_bytes <= self.gpu.total_bytes

    @property
    def headroom_bytes(self) -> int | None:
        if self.gpu is None:
            return None
        return self.gpu.total_bytes - self.breakdown.device_used_bytes


def activation_terms(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...]) -> list[Term]:
    """Saved activations (per checkpointing mode), the loss, and in-flight tensors."""
    layer = layer_activations(model, run, dt, adapted)
    fwd_bwd = frozenset({FORWARD, BACKWARD})
    in_flight = frozenset({BACKWARD, BACKWARD_END})
    t = run.tokens
    terms = [
        Term("activations/inputs", 2 * INT64 * t + 2 * dt.stream_bytes * t * model.head_dim, "input ids, labels, rotary cos/sin", fwd_bwd),
        # freed once backward has passed it, before any layer's backward (or recompute) starts
        Term("activations/final_norm", final_norm_bytes(model, run, dt), "the last RMSNorm's fp32 input copy, outside the layers", frozenset({FORWARD})),
        *loss_terms(model, run, dt, logits_bytes),  # full logits, or a saver's terms (planner/savers.py)
    ]
    if run.grad_ckpt:
        terms += [
            *checkpoint_terms(model, run, dt, Term("activations/checkpoint_inputs", checkpoint_inputs_bytes(model, run, dt), f"{model.num_layers} layer inputs kept by checkpointing", fwd_bwd)),
            Term("activations/layer", layer.total, "one layer recomputed in backward (all it saves)", frozenset({BACKWARD})),
        ]
    else:
        first = first_layer_savings(model, run, dt, adapted)
        saved = model.num_layers * (layer.total - layer.attention_scores) - first
        note = f"{model.num_layers} layers x {layer.total - layer.attention_scores:,} B saved for backward"
        if first:
            note += f", {first:,} B less in layer 0 (its input needs no gradient)"
        terms.append(Term("activations/layers", saved, note, fwd_bwd))
        if layer.attention_scores:
            terms.append(
                Term("activations/attention_scores", model.num_layers * layer.attention_scores, "eager attention: fp32 softmax + 16-bit copy, batch x heads x seq^2", fwd_bwd)
            )
    # when the last gradients are written, about half of layer 0's saved tensors are already freed
    terms.append(Term("activations/last_layer", layer.total // 2, "half of layer 0's saved tensors, still held as its gradients are written", frozenset({BACKWARD_END})))
    terms.append(Term("activations/transient", layer_transient_bytes(model, run, dt, adapted), "widest op's output and gradient in flight (MLP)", in_flight))
    method = run.method_record
    if method.adapter is not None:
        terms += method.adapter.extra_terms(model, run, dt, adapted)
    if dt.autocast and method.trains_base:
        copies = dt.compute_bytes * model.linear_params
        terms.append(Term("weights/autocast_copies", copies, "autocast caches 16-bit copies of trainable weights through forward", fwd_bwd))
    if dt.autocast:
        # the output head's fp32 weight (tied or not, never quantized) is cast to 16 bit for the
        # logits matmul, and the cast is saved for the input gradient until the head's backward
        head = dt.compute_bytes * model.vocab_size * model.hidden_size
        terms.append(Term("activations/lm_head_cast", head, "autocast's 16-bit copy of the output head, saved for backward", fwd_bwd))
    return terms


def adapter_weight_terms(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...]) -> list[Term]:
    """The adapter's weights (live always) and their gradients (from backward through the step)."""
    adapter = run.method_record.adapter
    if adapter is None:
        return []
    n = sum(numel * count for numel, count in adapter.tensors(model, run, adapted))
    return [
        Term("weights/adapter", n * dt.adapter_bytes, f"{adapter.label}: {n:,} params x {dt.adapter_bytes} B (fp32 by default, as peft)"),
        # written layer by layer during backward: at its start (the recomputed top layer) almost none exist
        Term("grads/trainable", n * dt.adapter_bytes, "one gradient per adapter param", frozenset({BACKWARD_END, OPTIMIZER})),
    ]


def estimate(
    model: ModelSpec,
    run: RunConfig,
    gpu: GpuSpec | None = None,
    corrections: Corrections | None = None,
) -> Estimate:
    """Estimate one run's peak memory.

    Raises:
        ConfigError: targets the model does not have.
    """
    corrections = corrections or DEFAULT_CORRECTIONS
    method = run.method_record
    adapted = method.adapter.placements(model, run) if method.adapter else ()
    dt = dtype_plan(run)
    activations = activation_terms(model, run, dt, adapted)
    scale = corrections.scale_for(run.method)
    if scale != 1.0:
        activations = [replace(term, bytes=round(term.bytes * scale)) for term in activations]
    terms = [*method.base.terms(model, run, dt), *adapter_weight_terms(model, run, dt, adapted), *optimizer_terms(model, run, dt, adapted), *activations]
    allocated = MemoryBreakdown(tuple(terms)).peak_allocated_bytes
    terms += overhead_terms(run, gpu, allocated, corrections)
    return Estimate(model, run, gpu, adapted, MemoryBreakdown(tuple(terms)), corrections.source)
