"""Activation memory: what autograd saves per decoder layer, the loss, and transients.

Counts follow the HF llama-family forward (transformers 5.23): RMSNorm upcasts its input to
fp32 and saves it; a frozen Linear saves nothing (its backward needs only the weight); a
trainable Linear saves its input; PEFT's LoRA casts the input to the adapter dtype and
lora_A saves that copy; SDPA saves q, k, v, its output and a fp32 logsumexp; eager attention
also saves fp32 softmax probabilities and their 16-bit copy (batch·heads·seq²).
"""

from __future__ import annotations

from dataclasses import dataclass

from .dtypes import DtypePlan
from .mla import mla_attention_saved_bytes
from .moe import experts_only_first_layer_bytes, moe_layer_saved_bytes
from .sdpa_dispatch import cuda_math_sdpa, math_sdpa_saved
from .specs import ModelSpec, RunConfig
from .stack import stack_for
from .targets import MOE_TARGETS

FP32 = 4
INT64 = 8


@dataclass(frozen=True)
class LayerActivations:
    """Bytes one decoder layer keeps for backward (no checkpointing), by part."""

    norms: int
    attention: int
    attention_scores: int  # eager, or CUDA's math SDPA: grows with seq²
    mlp: int
    linear_inputs: int  # inputs saved by trainable base Linears (full fine-tuning)
    adapter_inputs: int  # what the adapter saves: LoRA input copies, dropout masks, A outputs, ...
    adapter_extra: int  # method-specific saves, e.g. DoRA's base and LoRA results
    frozen_weight_casts: int  # autocast's 16-bit copies of fp32 frozen weights
    moe: int = 0  # a sparse MLP's router, dispatch and merged-expert tensors (planner/moe.py)
    math_sdpa: bool = False  # the scores are CUDA's math-kernel SDPA's (planner/sdpa_dispatch.py), not eager's

    @property
    def total(self) -> int:
        return (
            self.norms + self.attention + self.attention_scores + self.mlp
            + self.linear_inputs + self.adapter_inputs + self.adapter_extra + self.frozen_weight_casts + self.moe
        )


def layer_activations(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...]) -> LayerActivations:
    """Saved-for-backward bytes of one decoder layer at `run.batch x run.seq_len` tokens."""
    t = run.tokens
    inter = model.intermediate_size
    q_dim, kv_dim = model.num_heads * model.head_dim, model.num_kv_heads * model.head_dim
    lo, s, c = dt.linear_out_bytes, dt.stream_bytes, dt.compute_bytes
    method = run.method_record
    trains_base = method.trains_base

    norms = model.norms_per_layer * _norm_saved_bytes(model, run, dt)
    if model.qk_norm:  # Qwen3 normalises q and k per head the same way
        norms += FP32 * t * (q_dim + kv_dim) + FP32 * t * (model.num_heads + model.num_kv_heads)

    # SDPA/flash save rotated q, k, v, the output and logsumexp (fp32, per head and token);
    # autocast hands SDPA 16-bit copies, so those are what is kept
    attn_dtype = c if dt.autocast else lo
    attention = attn_dtype * t * (2 * q_dim + 2 * kv_dim) + FP32 * t * model.num_heads
    scores = 0
    eager = run.attention == "eager" or (run.attention == "sdpa" and not model.sdpa)  # Gemma-2: sdpa runs eager
    # a window the sequence reaches, or packed examples (--packing: block-diagonal by position ids)
    masked = run.attention == "sdpa" and not eager and (0 < model.sliding_window <= run.seq_len or run.packing)
    # repeat_kv copies k and v, except from a single kv head: expanding it is a view (Gemma-2B, Gemma 3 1B)
    kv_copies = 2 * attn_dtype * t * (q_dim - kv_dim) if model.num_kv_heads > 1 else 0
    if masked:
        # either way transformers builds an explicit mask, so SDPA gets k/v repeated
        # to all heads (use_gqa_in_sdpa) and keeps the mask as a float copy in q's dtype, per layer
        attention += kv_copies + attn_dtype * run.batch * run.seq_len * run.seq_len
    # transformers < 4.54 repeats k and v to all heads before SDPA, mask or not (planner/stack.py)
    repeated = run.attention == "sdpa" and not eager and not masked and not stack_for(run.transformers_version).sdpa_enable_gqa
    if repeated:
        attention += kv_copies
    math = cuda_math_sdpa(model, run, attn_dtype, masked, eager)  # fp32 with grouped kv heads on CUDA
    if math:
        attention, scores = math_sdpa_saved(model, run)
    if model.fused_qkv and not ((masked or eager or repeated or math) and model.num_kv_heads not in (1, model.num_heads)):  # else repeat_kv copies v
        # q, k, v are views of one qkv_proj output (Phi-3): SDPA's saved v keeps all of it alive
        attention += attn_dtype * t * (q_dim + kv_dim)
    if eager and model.attention_sinks:
        # gpt-oss (probe-gpt-oss, saved tensor by tensor): the matmuls keep q and k, v repeated to all heads
        # (k and v themselves at MHA), nothing else; the scores gain a sink column, are shifted by their row
        # max (int64 indices kept) and softmaxed in their own dtype, whose output is saved once
        attention = attn_dtype * t * 3 * q_dim
        rows = run.batch * model.num_heads * run.seq_len
        scores = attn_dtype * rows * (run.seq_len + 1) + INT64 * rows
    elif eager:
        # repeat_kv materialises k, v at full head count; softmax runs in fp32 and is saved,
        # then cast back and saved again by probs @ v
        if model.num_kv_heads not in (1, model.num_heads):
            attention += 2 * lo * t * (q_dim - kv_dim)
        # Gemma-2 caps the scores first, cap * tanh(scores / cap): tanh keeps its output (probe-gemma2)
        capped = lo if model.attn_softcap else 0
        # an fp32 stream (4-bit base) makes softmax's .to(query.dtype) a no-op: one tensor, saved once
        scores = (FP32 + (lo if lo != FP32 else 0) + capped) * run.batch * model.num_heads * run.seq_len * run.seq_len

    if model.kv_lora_rank and run.attention == "sdpa":  # DeepSeek-V2's latent attention: v narrower than q/k
        attention, scores = mla_attention_saved_bytes(model, run, attn_dtype, lo, trains_base)

    # gated MLP: act() saves gate, the product saves act(gate) and up
    mlp = 3 * lo * t * inter if model.gated_mlp else lo * t * inter

    # kv_latent: MLA's kv_a_layernorm output, in the stream's dtype like every norm's
    in_dtype = {"attention_in": s, "attn_out": lo, "mlp_in": s, "mlp_prod": lo, "kv_latent": s}
    if dt.autocast:
        in_dtype = {key: c for key in in_dtype}  # autocast saves its 16-bit cast of the input
    linear_inputs = 0
    if trains_base:
        for key, names in model.input_groups.items():
            width = model.linear(names[0]).in_features
            linear_inputs += in_dtype[key] * t * width

    adapter_inputs, extra = 0, 0
    if method.adapter is not None and adapted:
        adapter_inputs, extra = method.adapter.layer_saved(model, run, dt, adapted, in_dtype, trains_base)

    frozen_weight_casts = 0
    if dt.autocast and not method.quantizes_base:
        # F.linear under autocast casts an fp32 frozen weight to 16 bit and saves the cast
        frozen_weight_casts = c * model.layer_linear_params
    return LayerActivations(norms, attention, scores, mlp, linear_inputs, adapter_inputs, extra, frozen_weight_casts, moe_layer_saved_bytes(model, run, dt, adapted), math)


def _norm_saved_bytes(model: ModelSpec, run: RunConfig, dt: DtypePlan) -> int:
    """One RMSNorm on the residual stream: fp32 input copy + rsqrt; a trainable weight also keeps x̂."""
    t = run.tokens
    # Gemma's RMSNorm scales by (1 + weight) in fp32, so a trainable weight keeps the fp32 x̂
    x_hat = FP32 if model.norm_scale_fp32 else dt.stream_bytes
    return FP32 * t * model.hidden_size + FP32 * t + (x_hat * t * model.hidden_size if run.method_record.trains_base else 0)


def final_norm_bytes(model: ModelSpec, run: RunConfig, dt: DtypePlan) -> int:
    """The model's last norm runs outside the layers (and outside checkpointing) and saves like any other."""
    return _norm_saved_bytes(model, run, dt)


def first_layer_savings(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...]) -> int:
    """What layer 0 does not save when the frozen embedding's output does not require grad.

    That is the case for adapters without checkpointing (only checkpointing calls
    enable_input_require_grads): what of layer 0 comes before the adapter's first trainable
    tensor keeps nothing. The adapter kind says what that is.
    """
    method = run.method_record
    if method.adapter is None or run.grad_ckpt:
        return 0
    experts_only = experts_only_first_layer_bytes(model, run, dt, adapted)  # LoRA on a MoE's experts alone
    if experts_only is not None:
        return layer_activations(model, run, dt, adapted).total - experts_only
    frozen_layer = layer_activations(model, run, dt, ())
    return method.adapter.first_layer_savings(model, run, dt, adapted, frozen_layer, _norm_saved_bytes(model, run, dt))


def leading_layers_savings(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...]) -> int:
    """`first_layer_savings` where layer kinds differ (DeepSeek): leading dense layers that hold no
    adapted tensor (LoRA on the experts alone) keep nothing at all, and the first sparse layer is
    then the one whose input needs no gradient."""
    kinds = model.layer_kinds
    (first, count), rest = kinds[0], kinds[1:]
    own = set(first.module_names()) | (set(MOE_TARGETS) if first.num_experts else set())
    if rest and run.method_record.adapter is not None and not run.grad_ckpt and not own & set(adapted):
        return count * layer_activations(first, run, dt, adapted).total + first_layer_savings(rest[0][0], run, dt, adapted)
    return first_layer_savings(first, run, dt, adapted)


def checkpoint_inputs_bytes(model: ModelSpec, run: RunConfig, dt: DtypePlan) -> int:
    """Non-reentrant checkpointing keeps each layer's input hidden state and nothing else."""
    return model.num_layers * dt.stream_bytes * run.tokens * model.hidden_size


def layer_transient_bytes(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...]) -> int:
    """Short-lived tensors inside one layer: the widest op's output and its partner.

    The MLP is widest: the base output plus, for an adapted gate/up, the adapter output and
    the promoted fp32 sum (peft adds an fp32 LoRA result to a 16-bit base result).
    """
    t = run.tokens
    # DeepSeek's shared experts run apart from the routed ones: the widest op is the routed k x I
    widest = max(model.intermediate_size - model.shared_expert_intermediate_size, model.num_heads * model.head_dim)
    lo = dt.linear_out_bytes
    adapter = run.method_record.adapter
    mlp_adapted = adapter is not None and adapter.widens_mlp_output(adapted)
    # an unadapted gated MLP's backward holds three at once: the product's gradient and, from the
    # product's backward, the gradients of act(gate) and up (traced at 16k tokens, issue 14); a
    # sparse MLP's experts each see a slice of the tokens (planner/moe.py counts those)
    dense_gated = model.gated_mlp and not model.num_experts
    extra = (dt.adapter_bytes + FP32) if mlp_adapted else (2 * lo if dense_gated else lo)
    return t * widest * (lo + extra)


def logits_bytes(model: ModelSpec, run: RunConfig, dt: DtypePlan) -> int:
    """Logits and the causal-LM loss at their peak (start of backward).

    transformers' ForCausalLMLoss upcasts logits to fp32; cross_entropy's log_softmax keeps its
    fp32 output, and backward adds the fp32 gradient of nll_loss and of log_softmax. Before 4.49
    the loss ran on a contiguous fp32 copy of the shifted logits (planner/stack.py).
    """
    tv = run.tokens * model.vocab_size
    head_out = dt.compute_bytes if dt.autocast else dt.unquantized_bytes  # lm_head is never quantized
    path = stack_for(run.transformers_version).loss_path
    if path.shift_copy:
        # the loss sees b x (s-1) positions: the shifted copy, log_softmax and both gradients
        shifted = run.batch * (run.seq_len - 1) * model.vocab_size
        upcast = FP32 * tv if head_out != FP32 else 0
        if path.upcast_in_model:  # < 4.46: the forward casts, and the 16-bit head output dies at the cast
            forward = max(head_out * tv + upcast, FP32 * tv + 2 * FP32 * shifted)
        else:  # 4.46-4.48: the loss casts; the model's outputs keep the 16-bit logits
            forward = head_out * tv + upcast + 2 * FP32 * shifted
        backward = 3 * FP32 * shifted
    else:
        forward = head_out * tv + (FP32 * tv if head_out != FP32 else 0) + FP32 * tv
        backward = 3 * FP32 * tv
    # cap * tanh(logits / cap): only tanh's output outlives the forward (kept for backward); the head's
    # output and logits / cap are freed as the chain goes on (measured on probe-gemma2, issue 13)
    softcap = head_out * tv if model.logit_softcap else 0
    return max(forward, backward) + softcap
