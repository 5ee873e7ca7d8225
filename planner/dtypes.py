"""Bytes per element of every tensor family in a run, from its method and precision.

These encode library behaviour measured on torch 2.13 / transformers 5.23 / peft 0.21 /
bitsandbytes 0.50; each rule names the code path it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

from .specs import RunConfig

_ADAPTER_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class DtypePlan:
    weight_bytes: int  # unquantized base weights (full / lora / dora)
    unquantized_bytes: int  # embeddings, lm_head, norms next to a 4-bit base
    compute_bytes: int  # matmul dtype
    stream_bytes: int  # residual stream between layers
    linear_out_bytes: int  # what a Linear returns
    adapter_bytes: int  # trainable tensors (adapters; the weights under full fine-tuning), their grads and Adam states
    autocast: bool


def dtype_plan(run: RunConfig) -> DtypePlan:
    """Resolve element sizes for one run."""
    autocast = run.precision.endswith("-mixed")
    compute = 4 if run.precision == "fp32" else 2
    # pure bf16/fp16 keep weights in 16 bit; fp32 and *-mixed keep fp32 master weights
    weight = 2 if run.precision in ("bf16", "fp16") else 4
    method = run.method_record
    if method.quantizes_base:
        # prepare_model_for_kbit_training casts every non-4-bit bf16/fp16 param to fp32,
        # so the embedding emits fp32 and the whole residual stream runs in fp32; skipping it
        # (--no-kbit-upcast) leaves them, and the stream, in the load dtype
        unquantized = stream = 4 if run.kbit_upcast else weight
        # bnb Linear4bit computes in compute_dtype and casts its output back to the input dtype:
        # the fp32 stream, under autocast too (its matmul is a custom Function autocast leaves alone)
        linear_out = stream
    else:
        unquantized = weight
        stream = weight  # fp32 master weights (mixed) make the embedding emit fp32 too
        linear_out = compute if autocast else weight
    return DtypePlan(
        weight_bytes=weight,
        unquantized_bytes=unquantized,
        compute_bytes=compute,
        stream_bytes=stream,
        linear_out_bytes=linear_out,
        adapter_bytes=_ADAPTER_BYTES[run.adapter_dtype] if method.has_adapter else weight,
        autocast=autocast,
    )
