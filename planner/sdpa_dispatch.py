"""Which SDPA kernel a CUDA run gets, as far as memory goes.

torch's CUDA dispatcher tries flash attention, then the memory-efficient kernel, then math.
Flash takes 16-bit inputs only, and the memory-efficient kernel of the torch measured here
(2.11) takes fp32 but not grouped k/v heads. transformers >= 4.54 hands SDPA the kv heads
ungrouped (`enable_gqa`) whenever there is no mask. So fp32 q/k/v with fewer kv heads than query
heads — a 4-bit base with the fp32 upcast, or an fp32 run — runs the math kernel, which keeps
for backward the probabilities (batch x heads x seq x seq, fp32), q scaled, and k and v expanded
to every head, instead of the fused kernel's q, k, v, output and logsumexp (checked tensor by
tensor with `torch.nn.attention.sdpa_kernel(SDPBackend.MATH)` on CPU).

Found on the H200 rows of `calibrate/data/cuda-h200.db`: QLoRA without checkpointing measured
up to twice the fused-kernel estimate (Llama-3.2-1B, batch 2 x 2048: 43.6 GB measured, 23.6 GB
estimated), and a fake-tensor trace with the math kernel forced reproduces the measured forward
and backward peaks (41.0 GB). 16-bit runs keep flash (their rows agree with the fused estimate).
Not measured: multi-head attention in fp32 (assumed memory-efficient), GPUs before sm80, where
flash is unavailable and 16-bit grouped heads would fall back to math too, and newer torch
releases whose memory-efficient kernel takes grouped heads.
"""

from __future__ import annotations

from .specs import ModelSpec, RunConfig
from .stack import stack_for

FP32 = 4


def cuda_math_sdpa(model: ModelSpec, run: RunConfig, attn_bytes: int, masked: bool, eager: bool) -> bool:
    """Whether this run's SDPA falls back to the math kernel on CUDA (module docstring)."""
    return (
        run.device_kind == "cuda"
        and run.cuda_math_sdpa
        and run.attention == "sdpa"
        and not (eager or masked)
        and attn_bytes == FP32
        and model.num_kv_heads < model.num_heads
        and stack_for(run.transformers_version).sdpa_enable_gqa
    )


def math_sdpa_saved(model: ModelSpec, run: RunConfig) -> tuple[int, int]:
    """(q/k/v bytes, probabilities bytes) the math kernel saves for one layer, all fp32."""
    q_dim = model.num_heads * model.head_dim
    probabilities = FP32 * run.batch * model.num_heads * run.seq_len * run.seq_len
    return FP32 * run.tokens * 3 * q_dim, probabilities
