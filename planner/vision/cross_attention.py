"""Cross-attention VLMs (Llama-3.2-Vision, `mllama`): what the decoder's gated cross-attention layers
and the tiled, never-checkpointed vision tower keep for backward.

The decoder's other layers are plain Llama layers (`planner.activations`). A cross-attention layer
(`MllamaCrossAttentionDecoderLayer`, transformers 5.24) reads q from the text tokens and k/v from
the projected vision features (`cross_attention_states`, one tensor shared by every cross layer):
q and k pass a per-head RMSNorm (fp32 input copy + rstd saved), SDPA gets an explicit mask (the
cross-attention mask, repeated to every vision token), so k and v are repeated to all heads and
saved at that size; no rotary. The mask is built once per forward and shared by all cross layers.
"""

from __future__ import annotations

from dataclasses import replace

from ..activations import layer_activations
from ..dtypes import DtypePlan
from ..specs import ModelSpec, RunConfig

FP32 = 4
KV = ("k_proj", "v_proj")


def cross_layer_saved(dec: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...], vision_tokens: int) -> int:
    """Bytes one cross-attention layer saves for backward (no checkpointing) over `run.tokens` text
    tokens and `run.batch * vision_tokens` vision tokens."""
    t, v = run.tokens, run.batch * vision_tokens
    q_dim, kv_dim = dec.num_heads * dec.head_dim, dec.num_kv_heads * dec.head_dim
    text_side = layer_activations(dec, run, dt, tuple(a for a in adapted if a not in KV))
    lo = dt.compute_bytes if dt.autocast else dt.linear_out_bytes
    # q over the text, k and v repeated to all heads over the vision tokens, output, fp32 logsumexp
    attention = lo * (2 * t * q_dim + 2 * v * q_dim) + FP32 * t * dec.num_heads
    if run.attention == "eager":
        # scores and fp32 softmax over text x vision tokens, per head
        attention += (FP32 + (lo if lo != FP32 else 0)) * run.batch * dec.num_heads * run.seq_len * vision_tokens
    # q_norm / k_norm: the fp32 copy and rstd, per head
    norms = FP32 * (t * q_dim + t * dec.num_heads + v * kv_dim + v * dec.num_kv_heads)
    kv_adapter = 0
    kv = tuple(a for a in adapted if a in KV)
    if kv and run.method_record.adapter is not None:
        vrun = replace(run, batch=1, seq_len=v)
        in_dtype = dict.fromkeys(("attention_in", "attn_out", "mlp_in", "mlp_prod"), dt.stream_bytes)
        inputs, extra = run.method_record.adapter.layer_saved(dec, vrun, dt, kv, in_dtype, run.method_record.trains_base)
        kv_adapter = inputs + extra
    return text_side.total - text_side.attention - text_side.attention_scores + attention + norms + kv_adapter


def cross_mask_bytes(run: RunConfig, dt: DtypePlan, vision_tokens: int) -> int:
    """The cross-attention mask SDPA keeps (batch x 1 x text x vision, the model's dtype), built once."""
    lo = dt.compute_bytes if dt.autocast else dt.linear_out_bytes
    return lo * run.batch * run.seq_len * vision_tokens


def vision_block_saved(width: int, mlp_width: int, heads: int, tokens: int, sequence: int, b: int, eager: bool) -> int:
    """One `MllamaVisionEncoderLayer` over `tokens` (padded) patches in sequences of `sequence`:
    two LayerNorms (input + fp32 mean/rstd), SDPA's q, k, v, output and fp32 logsumexp (eager: the
    scores and fp32 softmax), exact GELU's input."""
    saved = 2 * tokens * (width * b + 2 * FP32) + 4 * tokens * width * b + FP32 * tokens * heads + tokens * mlp_width * b
    if eager:
        saved += (FP32 + b) * heads * tokens * sequence
    return saved


def cross_decoder_terms(spec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...], vlm, vit_tokens: int) -> list:
    """The decoder's activation terms: its self-attention layers as any Llama's, the cross-attention
    layers and their shared mask and vision states on top.

    Without checkpointing nothing before the first cross layer needs a gradient when the LLM is
    frozen (stage 1): those layers save nothing. With checkpointing every layer keeps its input,
    and the cross layers also hand the checkpoint the vision states and the mask (one tensor each)."""
    from ..breakdown import BACKWARD, BACKWARD_END, FORWARD, Term
    from ..estimator import activation_terms

    fwd_bwd = frozenset({FORWARD, BACKWARD})
    dec = spec.decoder
    layers = spec.family.cross_attention_layers(spec.config)
    n = len(layers)
    frozen_prefix = not run.grad_ckpt and not vlm.trains_llm  # stage 1: the text stream needs no gradient before the first cross layer
    saving = sum(1 for i in range(dec.num_layers) if i not in layers and (i > min(layers) or not frozen_prefix))
    self_dec = replace(dec, num_layers=max(1, saving))
    terms = activation_terms(self_dec, run, dt, adapted)
    if not saving:  # every self layer precedes the first cross layer: none saves anything
        terms = [t for t in terms if t.name not in ("activations/layers", "activations/attention_scores")]
    cross = cross_layer_saved(dec, run, dt, adapted, vit_tokens)
    first_cross = cross
    if frozen_prefix:
        from ..activations import _norm_saved_bytes, first_layer_savings

        # every counted self layer sits after a cross layer, so none skips the generic layer-0 savings
        back = first_layer_savings(self_dec, run, dt, adapted)
        if back and saving:
            terms.append(Term("activations/layer0_input_grad", back, "the self-attention layers counted all follow a cross layer: their input needs a gradient", fwd_bwd))
        # the first cross layer's text input needs no gradient: its input norm and q_norm save nothing
        first_cross -= _norm_saved_bytes(dec, run, dt) + FP32 * run.tokens * dec.num_heads * (dec.head_dim + 1)
    mask = cross_mask_bytes(run, dt, vit_tokens)
    states = dt.stream_bytes * run.batch * vit_tokens * dec.hidden_size
    if run.grad_ckpt:
        inputs = n * dt.stream_bytes * run.tokens * dec.hidden_size
        recompute = cross - layer_activations(dec, run, dt, adapted).total
        terms += [
            Term("activations/cross_checkpoint_inputs", inputs + mask + states, f"{n} cross layers' inputs kept by checkpointing, with the vision states and mask they share", fwd_bwd | {BACKWARD_END}),
            Term("activations/cross_layer", max(0, recompute), "a recomputed cross layer's excess over a self-attention layer (k/v over the vision tokens)", frozenset({BACKWARD})),
        ]
    else:
        terms.append(Term("activations/cross_layers", (n - 1) * cross + first_cross + mask, f"{n} cross-attention layers x {cross:,} B (q over text, k/v over {vit_tokens:,} vision tokens) and their shared mask", fwd_bwd))
    return terms


def mllama_vision_terms(spec, run: RunConfig, vlm, plan, b: int, hooked: bool) -> list:
    """The tower and projector activations of Mllama (activation dtype `b`).

    The tower's blocks are plain modules, so checkpointing never covers them: once
    `enable_input_require_grads()` hooks the patch embedding (checkpointing on) every block saves
    all it would for training. Each image's tiles are one attention sequence, padded to a multiple
    of 8 per tile, with one aspect-ratio mask (images x seq x seq) shared by every block."""
    from ..breakdown import BACKWARD, BACKWARD_END, FORWARD, Term
    from .mllama import _vision, padded_per_tile

    kept = frozenset({FORWARD, BACKWARD, BACKWARD_END})
    vc = _vision(spec.config)
    v = spec.vision
    tiles = vc["max_num_tiles"]
    sequence = tiles * padded_per_tile(vc)
    images = run.batch * len(plan.per_image)
    padded, patches = images * sequence, run.batch * plan.vit_tokens
    terms = []
    if hooked or vlm.vision != "freeze":
        block = vision_block_saved(v.width, v.mlp_width, v.num_heads, padded, sequence, b, run.attention == "eager")
        stem = (patches + padded) * (v.width * b + 2 * FP32)  # layernorm_pre over the patches, layernorm_post over the padded sequence
        if hooked:
            stem += (patches - images * tiles) * v.width * b  # the hooked patch-embedding output, a leaf of its own
        if vlm.vision == "full":
            block += padded * b * (3 * v.width + v.mlp_width)  # inputs of q/k/v (one tensor), o_proj, fc1, fc2
        elif vlm.vision == "lora":
            block += _vision_lora_saved(spec, run, padded, b)
        terms += [
            Term("vision/activations", v.num_layers * block, f"{v.num_layers} blocks x {block:,} B saved (not checkpointed: plain modules)", kept),
            Term("vision/attention_mask", images * sequence * sequence * b, f"the aspect-ratio mask, {images} x {sequence}^2, shared by every block", kept),
            Term("vision/stem", stem, "pre/post LayerNorms' inputs and fp32 stats, the hooked patch output", kept),
        ]
    if vlm.trains_projector:
        width = vc["vision_output_dim"]
        terms.append(Term("projector/activations", patches * width * b, f"the projector's input: final + {len(vc['intermediate_layers_indices'])} intermediate features, {width} wide", kept))
    return terms


def _vision_lora_saved(spec, run: RunConfig, tokens: int, b: int) -> int:
    """`--vision lora`: what LoRA on every block Linear saves over `tokens` (padded) patches."""
    from ..dtypes import dtype_plan
    from ..methods import METHODS
    from ..vlm_estimate import _vision_as_model

    adapter = next(m.adapter for m in METHODS.values() if m.adapter is not None and m.adapter.uses_rank)
    in_dtype = dict.fromkeys(("attention_in", "attn_out", "mlp_in", "mlp_prod"), b)
    names = tuple(linear.name for linear in spec.vision.linears)
    inputs, extra = adapter.layer_saved(_vision_as_model(spec), replace(run, batch=1, seq_len=tokens), dtype_plan(run), names, in_dtype, False)
    return inputs + extra
