"""Mixture-of-experts terms: the experts' weights and what a sparse MLP saves for backward.

transformers 5 runs a sparse layer as: router logits = F.linear(x, W_r) (E x H), an fp32
softmax, top-k; then per expert hit, its tokens are gathered, pass gate_up -> act * up -> down,
are scaled by their routing weight and index_add_-ed back (`OlmoeExperts.forward`, the same in
Qwen3-MoE and Mixtral). Under a balanced-routing assumption k * tokens rows go through the
experts in all; the gate_up/act/up tensors are then those of a dense MLP of width k * I (the
`intermediate_size` of a MoE ModelSpec), counted by `planner.activations`. This module adds the
rest, per layer.
"""

from __future__ import annotations

from .breakdown import BACKWARD, FORWARD, Term
from .dtypes import DtypePlan
from .specs import ModelSpec, RunConfig

FP32 = 4
INT64 = 8
EXPERT_TENSORS = ("gate_up_proj", "down_proj")
ROUTER = "gate"


def _layout(model: ModelSpec):
    from .families import family_of

    return family_of(model.model_type).moe


def _gate_up_rank(model: ModelSpec, rank: int) -> int:
    """The LoRA rank peft gives a fused gate_up_proj: 2r where gate and up were two Linears (transformers 4), r for gpt-oss."""
    return 2 * rank if _layout(model).gate_up_rank_doubled else rank


def dropout_refused_on(model: ModelSpec, run: RunConfig) -> tuple[str, ...]:
    """The router/fused-expert targets of an adapter run with dropout: peft 0.21's ParamWrapper
    (`target_parameters`) refuses `lora_dropout != 0` on them. Empty when nothing is refused."""
    if not model.num_experts or run.dropout <= 0 or run.method_record.adapter is None:
        return ()
    from .targets import MOE_TARGETS, resolve_targets

    try:
        adapted = resolve_targets(model, run.targets)
    except ValueError:  # a bad --targets is reported where the estimate resolves it
        return ()
    return tuple(name for name in adapted if name in MOE_TARGETS)


def routing_summary(model: ModelSpec, run: RunConfig) -> dict | None:
    """The routing the estimate assumes, and the worst case, for the header and `--json`'s `routing`.

    The terms assume balanced routing (tokens x k / E rows per expert). transformers 5's default
    experts path (`grouped_mm`) sorts the tokens x k (token, expert) rows and runs them as one grouped
    matmul, so no tensor depends on how the rows split: all tokens routed to the same k experts
    measured the same peak bytes on the CPU probes (router zeroed, every token to one k-set).
    """
    if not model.num_experts:
        return None
    t, k, e = run.tokens, model.experts_per_token, model.num_experts
    return {
        "assumption": "balanced",
        "experts": e,
        "experts_per_token": k,
        "tokens": t,
        "tokens_per_expert": t * k / e,
        "worst_case_tokens_per_expert": t,  # every token to the same k experts
        "worst_case_extra_bytes": 0,  # grouped_mm: the same tokens x k rows whatever the split (measured)
    }


def routing_line(model: ModelSpec, run: RunConfig) -> str:
    """One header line: the balanced assumption, and what the worst case changes (nothing)."""
    r = routing_summary(model, run)
    if r is None:
        return ""
    return (
        f"routing: balanced, {r['tokens']:,} tokens x top-{r['experts_per_token']} of {r['experts']} experts = "
        f"{r['tokens_per_expert']:,.0f} per expert; worst case (all to the same {r['experts_per_token']}: "
        f"{r['worst_case_tokens_per_expert']:,} each) needs the same memory"
    )


def routed_tokens(model: ModelSpec, run: RunConfig) -> int:
    """Rows through the experts of one layer: every token goes to k experts (balanced routing)."""
    return model.experts_per_token * run.tokens


def moe_layer_saved_bytes(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...]) -> int:
    """What one sparse layer saves for backward beyond its dense-equivalent MLP; 0 for a dense model."""
    if not model.num_experts:
        return 0
    t, routed, lo = run.tokens, routed_tokens(model, run), dt.linear_out_bytes
    h, e, i = model.hidden_size, model.num_experts, model.expert_intermediate_size
    trains_base = run.method_record.trains_base
    saved = FP32 * t * e  # softmax(router logits, dtype=float) keeps its fp32 output
    saved += INT64 * t * model.experts_per_token  # topk keeps its indices
    saved += 2 * INT64 * routed  # torch.where's (top_k_pos, token_idx) per expert, kept by the gathers and index_add_
    if _layout(model).clamped_swiglu:  # gpt-oss
        saved += clamped_swiglu_extra_bytes(model, run, dt)
    if _layout(model).fp32_routing_weights:
        # Mixtral: the fp32 top-k values and their sum, kept by the in-place renormalization, and the
        # fp32 routing weights beside each expert's down output, kept by their product
        renorm = 0 if _layout(model).router_fp32 else FP32 * t * (model.experts_per_token + 1)  # DeepSeek: scaled, not renormalized
        saved += renorm + lo * routed * h + FP32 * routed
    else:
        saved += lo * routed * (h + 1)  # each expert's down output and routing weights, kept by their product
    experts_adapted = any(name in adapted for name in EXPERT_TENSORS)
    if trains_base or experts_adapted:
        # a weight that needs a gradient makes F.linear keep its input: the gathered tokens, act(gate) * up
        saved += lo * routed * (h + i)
    if trains_base or ROUTER in adapted:
        # the router's input, kept for its weight gradient (DeepSeek: the fp32 copy it casts to)
        saved += (FP32 if _layout(model).router_fp32 else lo) * t * h
    if experts_adapted and not trains_base:
        # peft's ParamWrapper folds B·A into the expert stack (baddbmm, in the weight's dtype) under
        # parametrize.cached(): the merged stack is what F.linear keeps, for the whole layer
        weight = dt.unquantized_bytes if run.method_record.quantizes_base else dt.weight_bytes
        stacks = {"gate_up_proj": 2 * e * i * h, "down_proj": e * h * i}
        saved += weight * sum(n for name, n in stacks.items() if name in adapted)
        if weight != dt.adapter_bytes:
            # baddbmm keeps its factors, the LoRA B and A cast to the stack's dtype (rank 2r for gate_up)
            r = run.rank
            factors = {"gate_up_proj": _gate_up_rank(model, r) * e * (h + 2 * i), "down_proj": r * e * (i + h)}
            saved += weight * sum(n for name, n in factors.items() if name in adapted)
    if ROUTER in adapted and not trains_base:
        saved += FP32 * e * h  # the router's W + B·A (peft _LoraParameterProxy: bf16 + fp32 delta)
    return saved


def clamped_swiglu_extra_bytes(model: ModelSpec, run: RunConfig, dt: DtypePlan) -> int:
    """gpt-oss's sparse layer against the generic one (probe-gpt-oss, saved tensor by tensor).

    Its router softmaxes the k top logits in the stream's dtype (not all E in fp32), and the grouped
    path keeps three int64 permutations (the gathers' and the restore's). Its gate is
    (up.clamp + 1) * g * sigmoid(1.702 g), g = gate.clamp(max=7): the clamps keep gate_up's output
    (2I), sigmoid its output, the products the clamped gate, up + 1 and their product, 6I per row
    where a plain SwiGLU keeps 3I (already counted as the dense MLP of width k * I).
    """
    t, routed, lo = run.tokens, routed_tokens(model, run), dt.linear_out_bytes
    router = lo * t * model.experts_per_token - FP32 * t * model.num_experts
    # trainable expert biases are gathered per row by the sorted expert ids: one more int64 index
    bias_index = INT64 * routed if run.method_record.trains_base else 0
    return router + INT64 * routed + bias_index + 3 * lo * routed * model.expert_intermediate_size


def experts_only_first_layer_bytes(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...]) -> int | None:
    """What layer 0 saves when LoRA sits on the fused experts only and its input needs no gradient
    (no checkpointing): none of its norms, attention, router or gathers keep anything, only the
    experts' own saves. None when that is not the case (the generic first-layer rule applies).

    autograd keeps a matmul's input only for its weight's gradient and the weight only for its input's:
    gate_up keeps the gathered tokens (not its merged stack), act and the product keep gate_up's output
    and act(gate); down keeps its input, and its merged stack once gate_up makes that input need a
    gradient; the routing product keeps the weights only; one int64 permutation (measured, probe-olmoe).
    """
    experts = set(EXPERT_TENSORS)
    if not (model.num_experts and adapted and set(adapted) <= experts) or run.grad_ckpt or run.method_record.trains_base:
        return None
    lo, routed = dt.linear_out_bytes, routed_tokens(model, run)
    h, e, i, r = model.hidden_size, model.num_experts, model.expert_intermediate_size, run.rank
    weights_bytes = FP32 if _layout(model).fp32_routing_weights else lo
    saved = weights_bytes * routed + INT64 * routed
    weight = dt.unquantized_bytes if run.method_record.quantizes_base else dt.weight_bytes
    if "gate_up_proj" in adapted:
        saved += lo * routed * h + 3 * lo * routed * i
        if _layout(model).clamped_swiglu:  # gpt-oss's gate keeps 6I per row, not 3I (clamped_swiglu_extra_bytes)
            saved += 3 * lo * routed * i
    if "down_proj" in adapted:
        saved += lo * routed * i
        if "gate_up_proj" in adapted:
            saved += weight * e * h * i  # down's merged stack, kept for its (now grad-needing) input
    if weight != dt.adapter_bytes:
        factors = {"gate_up_proj": _gate_up_rank(model, r) * e * (h + 2 * i), "down_proj": r * e * (i + h)}
        saved += weight * sum(n for name, n in factors.items() if name in adapted)
    return saved


def moe_backward_bytes(model: ModelSpec, run: RunConfig, dt: DtypePlan) -> int:
    """A sparse layer's backward under checkpointing: the expert loop's gradients in flight.

    autograd runs every expert's product, down and act*up backward before their gathers, so the
    grads of the down outputs, act(gate) * up, act and up are live together for all k * tokens
    rows, beside the dense grad of the layer's input. Measured on probe-olmoe (CPU), where the
    recomputed layer's backward is the peak; without checkpointing the start of backward is.
    """
    if not model.num_experts:
        return 0
    lo, routed = dt.linear_out_bytes, routed_tokens(model, run)
    in_flight = lo * routed * (model.hidden_size + 3 * model.expert_intermediate_size) + lo * run.tokens * model.hidden_size
    experts = dt.unquantized_bytes if run.method_record.quantizes_base else dt.weight_bytes
    if _layout(model).clamped_swiglu:
        in_flight = max(in_flight, gpt_oss_recompute_end_bytes(model, run, dt) - _other_in_flight_bytes(model, run, dt))
    if _layout(model).fp32_routing_weights:
        # Mixtral: the per-token sum's gradient (tokens x k x H, cloned by its view) and the recomputed
        # routing product, both fp32 where 16-bit experts would make them 16-bit (OLMoE), meet at the
        # end of the layer's recompute
        in_flight += 2 * (FP32 - experts) * routed * model.hidden_size
    # DeepSeek: the shared experts' backward runs first, so their gate, up and act(gate) saves (counted
    # in the layer's `mlp`) are freed by then (measured on probe-deepseek-v2)
    in_flight -= 3 * lo * run.tokens * model.shared_expert_intermediate_size
    return in_flight


def gpt_oss_recompute_end_bytes(model: ModelSpec, run: RunConfig, dt: DtypePlan) -> int:
    """gpt-oss under checkpointing: the peak is where a layer's recompute ends (probe-gpt-oss, CPU).

    Recomputation stops at the layer's last saved tensor, the experts' restore permutation, while the
    experts function's locals are still alive: the gathered tokens (unless kept for a gradient), down's
    gathered bias and the weighted output; beside them the layer's residual and normed stream, the
    gradient of its output, and the eager masks of both layer types (batch x seq² each).
    """
    t, routed, lo, h = run.tokens, routed_tokens(model, run), dt.linear_out_bytes, model.hidden_size
    trains_base = run.method_record.trains_base
    experts_trained = trains_base or run.method_record.adapter is not None and any(
        name in EXPERT_TENSORS for name in run.method_record.adapter.placements(model, run)
    )
    rows = (2 if experts_trained else 3) * lo * routed * h
    stream = (2 if trains_base else 3) * lo * t * h  # residual, normed input (kept anyway when trained), output gradient
    masks = 2 * lo * run.batch * run.seq_len * run.seq_len
    return rows + stream + masks


def _other_in_flight_bytes(model: ModelSpec, run: RunConfig, dt: DtypePlan) -> int:
    """The backward terms the estimate adds beside this one that gpt-oss's recompute-end count already
    holds (the widest transient is its weighted output) or that are dead by then (DoRA's weight-norm
    temporaries live in the attention's forward): subtracted so that the sum is the recompute end."""
    from .activations import layer_transient_bytes  # activations imports this module

    adapter = run.method_record.adapter
    adapted = adapter.placements(model, run) if adapter is not None else ()
    extra = adapter.extra_terms(model, run, dt, adapted) if adapter is not None else []
    return layer_transient_bytes(model, run, dt, adapted) + sum(term.bytes for term in extra if BACKWARD in term.phases and term.phases <= {BACKWARD})


def upper_layer_grads_bytes(model: ModelSpec, dt: DtypePlan, top: ModelSpec | None = None) -> int:
    """Full fine-tuning with checkpointing: the gradients of every layer above the first layer of the
    kind whose recompute holds the peak (`top`; layer 0 where all layers are alike), written while that
    layer is recomputed and its (wide) expert backward runs. DeepSeek: the first sparse layer (measured
    on probe-deepseek-v2: only the layers above it hold gradients then)."""
    if not model.num_experts:
        return 0
    per_sparse_layer = model.expert_params // model.sparse_layers
    sizes = [
        (view, count, sum(linear.params for linear in view.linears) + model.norm_params_per_layer + (per_sparse_layer if view.num_experts else 0))
        for view, count in model.layer_kinds
    ]
    below = 0  # the layers up to and including the peak's one
    for view, count, params in sizes:
        below += params
        if top is None or view is top:
            break
        below += (count - 1) * params
    return (sum(count * params for _, count, params in sizes) - below) * dt.weight_bytes


def router_aux_loss_terms(model: ModelSpec, run: RunConfig, dt: DtypePlan) -> list[Term]:
    """The load-balancing loss a config with `output_router_logits: true` adds to the training loss.

    transformers 5 (`load_balancing_loss_func`, Mixtral/OLMoE/Qwen3-MoE) records every layer's router
    logits (tokens x E, the stream's dtype) and, after the LM loss, takes a softmax per layer whose
    output is saved; the histogram of the top-k picks carries no gradient. What outlives the forward
    is one tokens x E tensor per layer, then its gradient, waiting for that layer's backward
    (measured on probe-olmoe, checkpointing on and off: exactly L x tokens x E x 2 bytes in bf16).
    """
    if not (model.num_experts and model.router_aux_loss):
        return []
    saved = model.sparse_layers * run.tokens * model.num_experts * dt.linear_out_bytes
    return [Term("experts/router_aux_loss", saved, "router aux loss: one tokens x experts softmax (then its gradient) per layer", frozenset({FORWARD, BACKWARD}))]
