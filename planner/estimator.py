"""The estimator: a model, a run and a GPU in; a breakdown of named terms out."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import partial
from operator import attrgetter

from .activations import (
    checkpoint_inputs_bytes,
    final_norm_bytes,
    leading_layers_savings,
    layer_activations,
    layer_transient_bytes,
    logits_bytes,
)
from .breakdown import BACKWARD, BACKWARD_END, FORWARD, PHASES, MemoryBreakdown, Term, grad_phases
from .dtypes import DtypePlan, dtype_plan
from .moe import moe_backward_bytes, router_aux_loss_terms, upper_layer_grads_bytes
from .optimizer import optimizer_terms
from .overhead import Corrections, overhead_bytes, overhead_terms
from .savers import packed_inputs_bytes, checkpoint_terms, loss_terms, polynomial
from .scaling import MaxOfSums, PhaseSums, fit
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


def activation_terms(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...], math_branch: str | None = None) -> list[Term]:
    """Saved activations (per checkpointing mode), the loss, and in-flight tensors.

    `math_branch` ("low" or "high") takes one side of the math-kernel SDPA moments' max for every
    phase (`planner.scaling.MaxOfSums` fits each side, then takes the larger sum per phase).
    """
    # one layer of each kind (DeepSeek: dense, then sparse; else all alike) and how many there are
    kinds = [(view, layer_activations(view, run, dt, adapted), n) for view, n in model.layer_kinds]

    def held_in_backward(kind) -> int:  # one recomputed layer of this kind and what its backward has in flight
        view, saved, _ = kind
        return saved.total + layer_transient_bytes(view, run, dt, adapted) + moe_backward_bytes(view, run, dt)

    # checkpointed, the kind that holds more at its backward makes the peak; else the last layer starts backward
    top, layer, _ = max(kinds, key=held_in_backward) if run.grad_ckpt else kinds[-1]
    first_layer = kinds[0][1]  # layer 0's kind
    fwd_bwd = frozenset({FORWARD, BACKWARD})
    in_flight = frozenset({BACKWARD, BACKWARD_END})
    t = run.tokens
    # the loss and the model's last norm: what exists at the end of forward and the start of backward
    loss = [
        # freed once backward has passed it, before any layer's backward (or recompute) starts
        Term("activations/final_norm", final_norm_bytes(model, run, dt), "the last RMSNorm's fp32 input copy, outside the layers", frozenset({FORWARD})),
        *loss_terms(model, run, dt, logits_bytes),  # full logits, or a saver's terms (planner/savers.py)
    ]
    terms = [
        Term("activations/inputs", 2 * INT64 * t + 2 * dt.stream_bytes * t * model.head_dim + packed_inputs_bytes(run), "input ids, labels, rotary cos/sin", fwd_bwd),
        *loss,
    ]
    if run.grad_ckpt:
        terms += [
            *checkpoint_terms(model, run, dt, Term("activations/checkpoint_inputs", checkpoint_inputs_bytes(model, run, dt), f"{model.num_layers} layer inputs kept by checkpointing", fwd_bwd)),
            Term("activations/layer", layer.total, "one layer recomputed in backward (all it saves)", frozenset({BACKWARD})),
        ]
        if model.num_experts:
            terms.append(Term("activations/experts_backward", moe_backward_bytes(top, run, dt), "the recomputed sparse layer's expert-loop gradients, all experts at once (planner/moe.py)", frozenset({BACKWARD})))
            if run.method_record.trains_base and run.grad_accum == 1:  # accumulating, grads/trainable holds them already
                terms.append(Term("grads/upper_layers", upper_layer_grads_bytes(model, dt, top), "gradients of the layers above the recomputed one at the peak (layer 0; DeepSeek: the first sparse one)", frozenset({BACKWARD})))
    else:
        first = leading_layers_savings(model, run, dt, adapted)
        saved = sum(n * (kind.total - kind.attention_scores) for _, kind, n in kinds) - first
        note = " + ".join(f"{n} layers x {kind.total - kind.attention_scores:,} B" for _, kind, n in kinds) + " saved for backward"
        if first:
            note += f", {first:,} B less in layer 0 (its input needs no gradient)"
        terms.append(Term("activations/layers", saved, note, fwd_bwd))
        if layer.attention_scores:
            terms.append(
                Term("activations/attention_scores", sum(n * kind.attention_scores for _, kind, n in kinds), "attention probabilities, batch x heads x seq^2 (eager attention, or CUDA's math SDPA for fp32 with grouped kv heads)", fwd_bwd)
            )
    # when the last gradients are written, about half of layer 0's saved tensors are already freed
    terms.append(Term("activations/last_layer", first_layer.total // 2, "half of layer 0's saved tensors, still held as its gradients are written", frozenset({BACKWARD_END})))
    # CUDA's math SDPA (planner/sdpa_dispatch.py): as softmax runs, the scores sit beside the
    # probabilities (under checkpointing nothing is saved, so both are in flight), and a layer's
    # attention backward holds both their gradients. Those moments come before the logits exist and
    # after they are freed: they raise a phase's peak only by what they exceed the loss terms by.
    math_scores = max((kind.attention_scores for _, kind, _ in kinds if kind.math_sdpa), default=0)
    loss_in = {phase: sum(term.bytes for term in loss if phase in term.phases) for phase in (FORWARD, BACKWARD)}
    mlp_transient = layer_transient_bytes(top, run, dt, adapted)
    # by a layer's attention backward its MLP's backward has run: what the MLP saved is freed
    released = layer.mlp + layer.moe + (layer.norms + layer.adapter_inputs + layer.linear_inputs) // 2  # the MLP half of the layer
    in_flight_fwd = math_scores * (2 if run.grad_ckpt else 1) - loss_in[FORWARD]
    math_transient = 2 * math_scores - loss_in[BACKWARD] - released
    if math_branch is not None:  # one side of both maxes, each a polynomial in tokens and batch x seq²
        in_flight_fwd, transient = (0, mlp_transient) if math_branch == "low" else (in_flight_fwd, math_transient)
    else:
        in_flight_fwd, transient = max(0, in_flight_fwd), max(mlp_transient, math_transient)
    if math_scores and in_flight_fwd:
        terms.append(Term("activations/attention_in_flight", in_flight_fwd, "one layer's math-kernel SDPA scores beside its probabilities, beyond the logits", frozenset({FORWARD})))
    terms.append(Term("activations/transient", transient, "widest op's output and gradient in flight (MLP, or the math-kernel attention's beyond the logits)", in_flight))
    terms += router_aux_loss_terms(model, run, dt)  # a MoE config with output_router_logits on
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
        Term("grads/trainable", n * dt.adapter_bytes, "one gradient per adapter param", grad_phases(run.grad_accum)),
    ]


def tensor_terms(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...], scale: float, math_branch: str | None = None) -> list[Term]:
    """Every term but the overhead ones, which follow from these terms' peak."""
    activations = activation_terms(model, run, dt, adapted, math_branch)
    if scale != 1.0:
        activations = [replace(term, bytes=round(term.bytes * scale)) for term in activations]
    base = run.method_record.base.terms(model, run, dt)
    return [*base, *adapter_weight_terms(model, run, dt, adapted), *optimizer_terms(model, run, dt, adapted), *activations]


@dataclass(frozen=True)
class RunShape:
    """What an estimate takes from its model and run but for batch and seq_len, kept across estimates."""

    model: ModelSpec  # held, with the method, so that their ids in the cache key stay theirs
    method: object
    scale: float  # the activation scale of the corrections
    adapted: tuple[str, ...]
    dt: DtypePlan
    sums: PhaseSums | MaxOfSums | None  # None: not fitted, sum the terms


# every RunConfig field but batch and seq_len, so that a new field is part of the key
_SHAPE_FIELDS = attrgetter(*(f.name for f in fields(RunConfig) if f.name not in ("batch", "seq_len")))
_SHAPES: dict[tuple, RunShape] = {}
MAX_SHAPES = 4096


def run_shape(model: ModelSpec, run: RunConfig, scale: float) -> RunShape:
    """The cached shape of (model, run without batch and seq_len, activation scale)."""
    method = run.method_record
    key = (id(model), id(method), _SHAPE_FIELDS(run), scale)
    shape = _SHAPES.get(key)
    if shape is None:
        adapted = method.adapter.placements(model, run) if method.adapter else ()
        dt = dtype_plan(run)
        # a calibrated scale rounds each activation term, which is rarely linear: sum those terms
        # a sliding window switches a term on at seq_len >= window: not one polynomial, so sum the terms
        # MoE models sum their terms: the fitted sums are not proven exact for them
        fits = scale == 1.0 and not model.sliding_window and polynomial(run) and not model.num_experts  # a loss chunk caps a term
        sums = fit(lambda b, s: tensor_terms(model, replace(run, batch=b, seq_len=s), dt, adapted, scale)) if fits else None
        if fits and sums is None:  # CUDA's math-kernel SDPA moments are a max of two polynomials: fit each side
            low, high = (fit(lambda b, s, side=side: tensor_terms(model, replace(run, batch=b, seq_len=s), dt, adapted, scale, side)) for side in ("low", "high"))
            sums = MaxOfSums(low, high) if low is not None and high is not None else None
        if len(_SHAPES) >= MAX_SHAPES:
            _SHAPES.clear()
        shape = _SHAPES[key] = RunShape(model, method, scale, adapted, dt, sums)
    return shape


def _all_terms(model: ModelSpec, run: RunConfig, gpu: GpuSpec | None, corrections: Corrections, shape: RunShape) -> tuple[Term, ...]:
    terms = tensor_terms(model, run, shape.dt, shape.adapted, shape.scale)
    allocated = MemoryBreakdown(tuple(terms)).peak_allocated_bytes
    return (*terms, *overhead_terms(run, gpu, allocated, corrections))


def estimate(
    model: ModelSpec,
    run: RunConfig,
    gpu: GpuSpec | None = None,
    corrections: Corrections | None = None,
) -> Estimate:
    """Estimate one run's peak memory.

    The statistics come from the shape's fitted sums; the terms are built when first read.

    Raises:
        ConfigError: targets the model does not have.
    """
    corrections = corrections or DEFAULT_CORRECTIONS
    shape = run_shape(model, run, corrections.scale_for(run.method))
    build = partial(_all_terms, model, run, gpu, corrections, shape)
    if shape.sums is None:
        breakdown = MemoryBreakdown(build())
    else:
        *allocated, reserved, device = shape.sums.at(run.batch, run.seq_len)
        workspace, slack, context = overhead_bytes(run, gpu, max(allocated), corrections)
        by_phase = dict(zip(PHASES, [total + workspace for total in allocated]))  # the workspace is live in every phase
        breakdown = MemoryBreakdown.deferred(by_phase, reserved + slack, device + context, build)
    return Estimate(model, run, gpu, shape.adapted, breakdown, corrections.source)
