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
from .specs import ModelSpec, RunConfig
from .targets import LM_HEAD

FP32 = 4
BOOL = 1


@dataclass(frozen=True)
class LayerActivations:
    """Bytes one decoder layer keeps for backward (no checkpointing), by part."""

    norms: int
    attention: int
    attention_scores: int  # eager only: grows with seq²
    mlp: int
    linear_inputs: int  # inputs saved by trainable base Linears (full fine-tuning)
    adapter_inputs: int  # LoRA/DoRA copies of their inputs, dropout masks, A outputs
    dora: int  # DoRA's saved base and LoRA results
    frozen_weight_casts: int  # autocast's 16-bit copies of fp32 frozen weights

    @property
    def total(self) -> int:
        return (
            self.norms + self.attention + self.attention_scores + self.mlp
            + self.linear_inputs + self.adapter_inputs + self.dora + self.frozen_weight_casts
        )


def layer_activations(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...]) -> LayerActivations:
    """Saved-for-backward bytes of one decoder layer at `run.batch x run.seq_len` tokens."""
    t = run.tokens
    inter = model.intermediate_size
    q_dim, kv_dim = model.num_heads * model.head_dim, model.num_kv_heads * model.head_dim
    lo, s, c, ad = dt.linear_out_bytes, dt.stream_bytes, dt.compute_bytes, dt.adapter_bytes
    full = run.method == "full"

    norms = model.norms_per_layer * _norm_saved_bytes(model, run, dt)
    if model.qk_norm:  # Qwen3 normalises q and k per head the same way
        norms += FP32 * t * (q_dim + kv_dim) + FP32 * t * (model.num_heads + model.num_kv_heads)

    # SDPA/flash save rotated q, k, v, the output and logsumexp (fp32, per head and token);
    # autocast hands SDPA 16-bit copies, so those are what is kept
    attn_dtype = c if dt.autocast else lo
    attention = attn_dtype * t * (2 * q_dim + 2 * kv_dim) + FP32 * t * model.num_heads
    scores = 0
    if run.attention == "eager":
        # repeat_kv materialises k, v at full head count; softmax runs in fp32 and is saved,
        # then cast back and saved again by probs @ v
        if model.num_kv_heads != model.num_heads:
            attention += 2 * lo * t * (q_dim - kv_dim)
        scores = (FP32 + lo) * run.batch * model.num_heads * run.seq_len * run.seq_len

    # gated MLP: act() saves gate, the product saves act(gate) and up
    mlp = 3 * lo * t * inter if model.gated_mlp else lo * t * inter

    in_dtype = {"attention_in": s, "attn_out": lo, "mlp_in": s, "mlp_prod": lo}
    if dt.autocast:
        in_dtype = {key: c for key in in_dtype}  # autocast saves its 16-bit cast of the input
    linear_inputs = 0
    if full:
        for key, names in model.input_groups.items():
            width = model.linear(names[0]).in_features
            linear_inputs += in_dtype[key] * t * width

    adapter_inputs, dora = 0, 0
    for key, names in model.input_groups.items():
        chosen = [name for name in names if name in adapted]
        if not chosen:
            continue
        width = model.linear(chosen[0]).in_features
        copy_dtype = c if dt.autocast else ad
        if run.dropout > 0:
            # each module has its own dropout, saving its output (lora_A's input) and the mask:
            # CUDA's fused kernel keeps a bool mask, the CPU path a scaled noise tensor in x's dtype
            # (autocast then saves lora_A's own 16-bit cast of the dropout output)
            mask = BOOL if run.device_kind == "cuda" else ad
            adapter_inputs += len(chosen) * (copy_dtype + mask) * t * width
        elif copy_dtype != in_dtype[key]:
            # peft casts x to the adapter dtype per module; lora_A saves the copy
            adapter_inputs += len(chosen) * copy_dtype * t * width
        elif not full:
            adapter_inputs += in_dtype[key] * t * width  # the shared input itself stays alive
        for name in chosen:
            adapter_inputs += copy_dtype * t * run.rank  # lora_A output, saved by lora_B
            if run.is_dora:
                dora += _dora_saved_bytes(model.linear(name), run, lo, ad)

    frozen_weight_casts = 0
    if dt.autocast and not run.is_quantized:
        # F.linear under autocast casts an fp32 frozen weight to 16 bit and saves the cast
        frozen_weight_casts = c * model.layer_linear_params
    return LayerActivations(norms, attention, scores, mlp, linear_inputs, adapter_inputs, dora, frozen_weight_casts)


def _norm_saved_bytes(model: ModelSpec, run: RunConfig, dt: DtypePlan) -> int:
    """One RMSNorm on the residual stream: fp32 input copy + rsqrt; a trainable weight also keeps x̂."""
    t = run.tokens
    return FP32 * t * model.hidden_size + FP32 * t + (dt.stream_bytes * t * model.hidden_size if run.method == "full" else 0)


def final_norm_bytes(model: ModelSpec, run: RunConfig, dt: DtypePlan) -> int:
    """The model's last norm runs outside the layers (and outside checkpointing) and saves like any other."""
    return _norm_saved_bytes(model, run, dt)


def first_layer_savings(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...]) -> int:
    """What layer 0 does not save when the frozen embedding's output does not require grad.

    That is the case for adapters without checkpointing (only checkpointing calls
    enable_input_require_grads): layer 0's input norm then keeps nothing, and a dropout in front
    of q/k/v keeps no mask (its input needs no gradient). Without any attention adapter the whole
    attention block of layer 0 keeps nothing either.
    """
    if run.method == "full" or run.grad_ckpt:
        return 0
    t = run.tokens
    savings = _norm_saved_bytes(model, run, dt)
    attention_in = [linear.name for linear in model.linears if linear.group == "attention" and linear.in_features == model.hidden_size and linear.name != "o_proj"]
    chosen = [name for name in attention_in if name in adapted]
    if chosen and run.dropout > 0:
        mask = BOOL if run.device_kind == "cuda" else dt.adapter_bytes
        savings += len(chosen) * mask * t * model.hidden_size
    if not chosen:
        layer = layer_activations(model, run, dt, ())
        savings += layer.attention + layer.attention_scores
    return savings


def _dora_saved_bytes(linear, run: RunConfig, lo: int, ad: int) -> int:
    """peft's DoRA forward: (m/||W|| - 1) * base_result + m/||W|| * lora_result keeps both results.

    Without dropout the base result is the 16-bit output the layer already computed. With
    dropout, peft recomputes it as F.linear(dropout(x), W.to(x.dtype)), which saves that
    full-size copy of the base weight in the adapter dtype for backward.
    """
    t = run.tokens
    if run.dropout > 0:
        return ad * linear.in_features * linear.out_features + 2 * ad * t * linear.out_features
    return (lo + ad) * t * linear.out_features


def checkpoint_inputs_bytes(model: ModelSpec, run: RunConfig, dt: DtypePlan) -> int:
    """Non-reentrant checkpointing keeps each layer's input hidden state and nothing else."""
    return model.num_layers * dt.stream_bytes * run.tokens * model.hidden_size


def layer_transient_bytes(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...]) -> int:
    """Short-lived tensors inside one layer: the widest op's output and its partner.

    The MLP is widest: the base output plus, for an adapted gate/up, the adapter output and
    the promoted fp32 sum (peft adds an fp32 LoRA result to a 16-bit base result).
    """
    t = run.tokens
    widest = max(model.intermediate_size, model.num_heads * model.head_dim)
    lo = dt.linear_out_bytes
    mlp_adapted = any(name in adapted for name in ("gate_proj", "up_proj", "gate_up_proj"))
    extra = (dt.adapter_bytes + FP32) if mlp_adapted else lo
    return t * widest * (lo + extra)


def dora_transient_bytes(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...]) -> int:
    """DoRA builds B·A through an identity matrix and the full weight to take its norm.

    peft's DoRA layer makes eye(in) in the adapter dtype, the dense lora weight (in x out)
    and the dequantized/cast base weight plus their sum, all at once for the largest module.
    """
    if not run.is_dora:
        return 0
    ad = dt.adapter_bytes
    largest = 0
    for name in adapted:
        if name == LM_HEAD:
            fan_in, fan_out = model.hidden_size, model.vocab_size
        else:
            linear = model.linear(name)
            fan_in, fan_out = linear.in_features, linear.out_features
        largest = max(largest, ad * fan_in * fan_in + 3 * ad * fan_in * fan_out)
    return largest


def logits_bytes(model: ModelSpec, run: RunConfig, dt: DtypePlan) -> int:
    """Logits and the causal-LM loss at their peak (start of backward).

    transformers' ForCausalLMLoss upcasts logits to fp32; cross_entropy's log_softmax keeps its
    fp32 output, and backward adds the fp32 gradient of nll_loss and of log_softmax.
    """
    tv = run.tokens * model.vocab_size
    head_out = dt.compute_bytes if dt.autocast else (dt.unquantized_bytes if run.is_quantized else dt.weight_bytes)
    forward = head_out * tv + (FP32 * tv if head_out != FP32 else 0) + FP32 * tv
    backward = 3 * FP32 * tv
    softcap = 2 * head_out * tv if model.logit_softcap else 0  # logits / cap, tanh kept for backward
    return max(forward, backward) + softcap
