"""The memory savers people reach for, as run settings and named terms.

`--loss chunked|fused` replaces the full-logits loss term, `--offload-activations` moves the
checkpointed layer inputs to a host-RAM line, `--packing` trades padding for a block-diagonal
attention mask, and `--expandable-segments` shrinks the allocator's slack. Each setting's
default is the plain run, whose terms are untouched. Sources: the bundled trainer's chunked loss
(calibrate/trainer/chunked_loss.py), Liger Kernel's fused linear cross-entropy, torch's
`save_on_cpu` as transformers' `activation_checkpointing_enable(offload=True)` uses it.
"""

from __future__ import annotations

from dataclasses import replace

from .breakdown import BACKWARD, FORWARD, Term
from .dtypes import DtypePlan
from .specs import LOSSES, ModelSpec, RunConfig

FP32 = 4
HOST = "host"  # a term's stat: pinned host RAM, counted in no device statistic
DEFAULT_LOSS_CHUNK = 1024
EXPANDABLE_SLACK_FACTOR = 0.5  # documented default, no GPU data yet: expandable segments halve the slack


def saver_problems(run: RunConfig):
    """Every problem with the saver settings of `run` (flag, bad value, what is allowed)."""
    if run.loss not in LOSSES:
        yield f"--loss {run.loss!r} is not one of: {', '.join(LOSSES)}"
    if not isinstance(run.loss_chunk, int) or isinstance(run.loss_chunk, bool) or run.loss_chunk <= 0:
        yield f"--loss-chunk must be a whole number of tokens greater than 0, got {run.loss_chunk!r}"
    if run.offload_activations and not run.grad_ckpt:
        yield "--offload-activations moves the checkpointed layer inputs to host RAM: it needs --grad-ckpt"
    if run.packing and run.attention == "eager":
        yield "--packing needs an attention that takes per-example position ids (sdpa or flash); eager builds a full seq x seq mask: use --attention sdpa"


def _loss_chunk_tokens(run: RunConfig) -> int:
    return min(run.loss_chunk, run.tokens)


def fused_chunk_tokens(model: ModelSpec, run: RunConfig) -> int:
    """Liger FLCE's chunk: next_pow2(ceil(BT / ceil(V / H))), capped at BT (fused_linear_cross_entropy.py)."""
    tokens = run.tokens
    inc_factor = -(-model.vocab_size // model.hidden_size)
    chunk = -(-tokens // inc_factor)
    return min(1 << (chunk - 1).bit_length(), tokens)


def loss_terms(model: ModelSpec, run: RunConfig, dt: DtypePlan, logits_bytes) -> list[Term]:
    """The loss's terms; `logits_bytes(model, run, dt)` is the full-logits rule of the standard loss."""
    if run.loss == "standard":
        return [Term("activations/logits", logits_bytes(model, run, dt), "logits + fp32 upcast for the loss + log_softmax and its gradient", frozenset({FORWARD}))]
    t, h = run.tokens, model.hidden_size
    hidden = dt.stream_bytes * t * h
    if run.loss == "chunked":
        chunk = _loss_chunk_tokens(run)
        one_chunk = logits_bytes(model, replace(run, batch=1, seq_len=chunk, loss="standard", packing=False), dt)
        return [
            Term("activations/loss_chunk", one_chunk, f"one chunk of {chunk:,} tokens: its logits, fp32 copies and gradients (full logits never exist)", frozenset({FORWARD})),
            # the head runs under checkpoint per chunk: its input is kept until the chunk's backward
            Term("activations/loss_hidden", hidden, "the final hidden states, kept for each chunk's recompute in backward", frozenset({FORWARD})),
            Term("activations/loss_hidden_grad", hidden, "the hidden states' gradient, gathered over the chunks", frozenset({FORWARD})),
        ]
    # fused (Liger FLCE): gradients are computed in forward, chunk by chunk; no [tokens, vocab] tensor survives
    chunk = fused_chunk_tokens(model, run)
    terms = [
        Term("activations/loss_chunk", dt.compute_bytes * chunk * model.vocab_size, f"Liger FLCE: one chunk of {chunk:,} tokens' logits (next_pow2(tokens / ceil(V/H)))", frozenset({FORWARD})),
        Term("activations/loss_grad_input", dt.compute_bytes * t * h, "Liger FLCE: the hidden states' gradient, computed in forward and kept for backward", frozenset({FORWARD, BACKWARD})),
        Term("activations/loss_per_token", FP32 * t, "Liger FLCE: fp32 loss per token", frozenset({FORWARD})),
    ]
    if run.method_record.trains_base:
        terms.append(Term("activations/loss_grad_weight", dt.adapter_bytes * model.vocab_size * h, "Liger FLCE: the head's gradient, computed in forward", frozenset({FORWARD})))
    return terms


def checkpoint_terms(model: ModelSpec, run: RunConfig, dt: DtypePlan, kept: Term) -> list[Term]:
    """The checkpointed layer inputs: on the device, or (offloaded) in host RAM bar the one in use."""
    if not run.offload_activations:
        return [kept]
    one = kept.bytes // model.num_layers
    return [
        Term("activations/checkpoint_inputs", one, "one layer input on the device: the one being recomputed (save_on_cpu copies it back)", kept.phases),
        Term("host/checkpoint_inputs", kept.bytes, f"{model.num_layers} layer inputs in pinned host RAM (save_on_cpu)", kept.phases, HOST),
    ]


def packed_inputs_bytes(run: RunConfig) -> int:
    """--packing: the int64 position ids and the boolean block-diagonal mask (batch x seq x seq) transformers builds once."""
    return 8 * run.tokens + run.batch * run.seq_len * run.seq_len if run.packing else 0


def host_bytes(terms) -> int:
    """Host RAM the run's offloaded activations need (0 without --offload-activations)."""
    return sum(term.bytes for term in terms if term.stat == HOST)


def slack_ratio(run: RunConfig, ratio: float) -> float:
    """The allocator's reserved-over-allocated ratio under the run's allocator setting."""
    return ratio * EXPANDABLE_SLACK_FACTOR if run.expandable_segments else ratio


def polynomial(run: RunConfig) -> bool:
    """Whether the run's terms grow as c0 + c1·tokens + c2·batch·seq² (a chunk caps a term: not so)."""
    return run.loss == "standard" and not run.packing
