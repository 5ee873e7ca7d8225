"""`--loss chunked` in plain torch: the output head and cross-entropy one token chunk at a time.

The decoder runs as usual and hands back its final hidden states; each chunk of tokens goes
through the head (and Gemma-2's logit soft-cap) and the fp32 cross-entropy under
`torch.utils.checkpoint`, so a chunk's logits die with its loss and are recomputed in its
backward: the full [tokens, vocab] logits never exist. The loss is the same mean over labelled
tokens as transformers' ForCausalLMLoss (labels shifted left, -100 ignored).
`--loss fused` is Liger Kernel's fused linear cross-entropy (CUDA only): `fused_loss`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def _causal_model(model):
    """The transformers CausalLM inside a PeftModel (its Linears carry the adapters), or the model."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        # calling the decoder directly would skip DDP's gradient all-reduce
        raise RuntimeError("--loss chunked/fused runs the decoder and the head separately, which DDP's wrapper does not see: use --loss standard with more than one process")
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _chunk_loss_sum(hidden: torch.Tensor, targets: torch.Tensor, head, softcap: float | None) -> torch.Tensor:
    logits = head(hidden)
    if softcap:  # Gemma-2: cap * tanh(logits / cap), as its ForCausalLM does before the loss
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")


def chunked_loss(model, chunk_tokens: int, input_ids: torch.Tensor, labels: torch.Tensor, **inputs) -> torch.Tensor:
    """The causal-LM loss of `model` on a batch, its head and cross-entropy run `chunk_tokens` at a time.

    `inputs` go to the decoder as they would to the model (attention_mask, position_ids).
    """
    causal = _causal_model(model)
    hidden = causal.get_decoder()(input_ids=input_ids, **inputs).last_hidden_state
    head = causal.get_output_embeddings()
    softcap = getattr(causal.config, "final_logit_softcapping", None)
    targets = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1)
    flat = hidden.reshape(-1, hidden.shape[-1])
    total = None
    for piece, piece_targets in zip(flat.split(chunk_tokens), targets.split(chunk_tokens)):
        part = checkpoint(_chunk_loss_sum, piece, piece_targets, head, softcap, use_reentrant=False)
        total = part if total is None else total + part
    return total / (targets != IGNORE_INDEX).sum().clamp(min=1)


def fused_loss(model, input_ids: torch.Tensor, labels: torch.Tensor, **inputs) -> torch.Tensor:
    """Liger Kernel's fused linear cross-entropy over the final hidden states (CUDA only)."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    causal = _causal_model(model)
    hidden = causal.get_decoder()(input_ids=input_ids, **inputs).last_hidden_state
    head = causal.get_output_embeddings()
    targets = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1)
    softcap = getattr(causal.config, "final_logit_softcapping", None)
    loss_fn = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, softcap=softcap)
    return loss_fn(head.weight, hidden.reshape(-1, hidden.shape[-1]), targets, getattr(head, "bias", None))


def fused_problem() -> str | None:
    """Why `--loss fused` cannot run here, or None."""
    import importlib.util

    missing = []
    if importlib.util.find_spec("liger_kernel") is None:
        missing.append("Liger Kernel is not installed (pip install liger-kernel)")
    if not torch.cuda.is_available():
        missing.append("no CUDA GPU is visible")
    if not missing:
        return None
    return "--loss fused runs Liger Kernel's fused linear cross-entropy, which needs a CUDA GPU and liger-kernel: " + " and ".join(missing) + "; use --loss chunked (plain torch, any device)"


def training_loss(model, run, input_ids: torch.Tensor, labels: torch.Tensor, **inputs) -> torch.Tensor:
    """The loss of one micro-batch as `run.loss` asks: the model's own, chunked, or fused."""
    if run.loss == "chunked":
        return chunked_loss(model, run.loss_chunk, input_ids, labels, **inputs)
    if run.loss == "fused":
        problem = fused_problem()
        if problem:
            raise RuntimeError(problem)
        return fused_loss(model, input_ids, labels, **inputs)
    return model(input_ids=input_ids, labels=labels, **inputs).loss
