"""The measured training step at full size (e.g. Llama-3-8B, 2048 tokens) on fake tensors.

``trace_step`` runs exactly the step of ``cpu_probe.measure_cpu`` - same model build, same
optimizer, same loop - but every tensor is a ``FakeTensor`` (shape, dtype, strides, storage size;
no data), so nothing is allocated and an 8B model traces in seconds and a few hundred MB of RAM.
The ``LiveTensorTracker`` counts the fake storages exactly as it counts real ones.

How the model gets fake:

1. ``build_model(..., meta=True)``: transformers + PEFT (+ 4-bit replacement and
   ``prepare_model_for_kbit_training``) on the meta device. Building under fake mode instead breaks
   ``get_peft_model``.
2. Every parameter and buffer is swapped for a fake CPU tensor of the same shape/dtype (tied weights
   stay tied). ``Params4bit`` cannot wrap a fake tensor, so a 4-bit weight becomes a plain fake
   uint8 parameter of the packed size ``(out*in+1)//2 x 1`` carrying a fake ``QuantState`` of the
   sizes bitsandbytes makes (absmax per 64-block, fp32 or - double quant - uint8 with a nested fp32
   absmax per 256 blocks, code, offset). ``bnb.nn.Linear4bit.forward`` then runs unchanged through
   ``bnb.matmul_4bit`` -> ``MatMul4Bit`` -> ``bitsandbytes::gemm_4bit`` (fake kernel registered by
   bitsandbytes), saving what the real layer saves; its backward dequantizes the weight through
   ``bitsandbytes::dequantize_4bit`` as the real one does.
3. Fake CUDA does not work on a CPU build of torch: the trace runs on fake CPU tensors.

Patches, all local to the trace (context managers, restored afterwards):

* ``transformers.masking_utils.is_tracing`` ignores fake tensors (it treats them as tracing and
  then materializes a full (B, 1, S, S) mask that the real run never builds), and
  ``find_packed_sequence_indices`` answers "not packed" (the real answer for one unpadded sequence
  per row; it reads values, which a fake tensor has none of);
* ``torch.optim.adam._get_value`` returns 1.0 for a fake step counter (``.item()`` on a fake);
* peft's ``dequantize_module_weight`` (DoRA) dequantizes the fake 4-bit weights;
* torch's meta ``grouped_mm`` accepts bf16 only: fp32 fused experts (a 4-bit base upcasts them) get
  the same shapes in fp32, so autograd saves what the real op saves;
* with ``run.device_kind == "cuda"``: dropout goes through ``torch.native_dropout`` (bool mask, as
  CUDA's fused kernel saves) instead of the CPU path (mask in the input dtype), AdamW/SGD use the
  foreach kernels (torch's CUDA default), storages are rounded up to 512 bytes (the CUDA caching
  allocator's block size, which ``max_memory_allocated`` includes), and SDPA with fp32 q/k/v and
  grouped kv heads runs the math kernel, as CUDA's dispatcher picks it (traces before this
  emulation say so by lacking ``sdpa_dispatch`` in their environment).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings

import torch
from torch import nn

from vramplan.planner.specs import RunConfig

from .cpu_probe import describe_model, make_optimizer, run_steps, summarize
from .cpu_tracker import LiveTensorTracker, unique_storage_bytes
from .model_build import build_model

NF4_BLOCKSIZE = 64
NESTED_BLOCKSIZE = 256
CUDA_BLOCK = 512


def _fake_quant_state(out_features: int, in_features: int, dtype: torch.dtype, nested: bool):
    """A ``QuantState`` of fake tensors sized like ``bnb.functional.quantize_4bit``'s (NF4, blocksize 64)."""
    from bitsandbytes.functional import QuantState

    blocks = math.ceil(out_features * in_features / NF4_BLOCKSIZE)
    if not nested:  # one fp32 absmax per block
        return QuantState(absmax=torch.empty(blocks, dtype=torch.float32), **_nf4_fields(out_features, in_features, dtype))
    # double quant: uint8 absmax per block, quantized again with an fp32 absmax per 256 blocks
    state2 = QuantState(
        absmax=torch.empty(math.ceil(blocks / NESTED_BLOCKSIZE), dtype=torch.float32),
        code=torch.empty(256, dtype=torch.float32),
        blocksize=NESTED_BLOCKSIZE,
        quant_type=None,
        dtype=torch.float32,
    )
    return QuantState(
        absmax=torch.empty(blocks, dtype=torch.uint8),
        offset=torch.empty((), dtype=torch.float32),
        state2=state2,
        **_nf4_fields(out_features, in_features, dtype),
    )


def _nf4_fields(out_features: int, in_features: int, dtype: torch.dtype) -> dict:
    return dict(
        shape=torch.Size([out_features, in_features]),
        code=torch.empty(16, dtype=torch.float32),
        blocksize=NF4_BLOCKSIZE,
        quant_type="nf4",
        dtype=dtype,
    )


def materialize_fake(model: nn.Module, run: RunConfig) -> int:
    """Swap every meta parameter/buffer for a fake CPU tensor (call under the FakeTensorMode).

    Returns the number of 4-bit weights replaced by fake packed weights.
    """
    import bitsandbytes as bnb

    memo: dict[int, torch.Tensor] = {}
    quantized = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and "weight" in module._parameters:
            w = module._parameters["weight"]
            if id(w) not in memo:
                out_f, in_f = module.out_features, module.in_features
                packed = torch.empty(((out_f * in_f + 1) // 2, 1), dtype=torch.uint8)
                fake_w = nn.Parameter(packed, requires_grad=False)
                fake_w.quant_state = _fake_quant_state(out_f, in_f, w.dtype, run.double_quant)
                fake_w.vramplan_fake_4bit = True
                memo[id(w)] = memo[id(fake_w)] = fake_w
                quantized += 1
            module._parameters["weight"] = memo[id(w)]
        for name, p in list(module._parameters.items()):
            if p is None:
                continue
            if id(p) not in memo:
                fake = torch.empty_strided(tuple(p.shape), tuple(p.stride()), dtype=p.dtype)
                new = nn.Parameter(fake, requires_grad=p.requires_grad)
                memo[id(p)] = memo[id(new)] = new
            module._parameters[name] = memo[id(p)]
        for name, b in list(module._buffers.items()):
            if b is None:
                continue
            if id(b) not in memo:
                new = torch.empty_strided(tuple(b.shape), tuple(b.stride()), dtype=b.dtype)
                memo[id(b)] = memo[id(new)] = new
            module._buffers[name] = memo[id(b)]
    return quantized


@contextlib.contextmanager
def _patched(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _is_fake(t) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor)


@contextlib.contextmanager
def trace_patches(run: RunConfig):
    """Everything the fake trace needs patched, restored on exit (see the module docstring)."""
    import peft.tuners.lora.dora as dora_mod
    import peft.tuners.lora.layer as lora_layer_mod
    import torch.optim.adam as adam_mod
    import transformers.masking_utils as masking_utils
    from transformers.utils import import_utils

    orig_is_tracing = import_utils.is_tracing

    def is_tracing(tensor=None):
        if tensor is not None and _is_fake(tensor):
            return orig_is_tracing()
        return orig_is_tracing(tensor)

    orig_find_packed = masking_utils.find_packed_sequence_indices

    def find_packed_sequence_indices(position_ids):
        if _is_fake(position_ids):
            # the real function's temporaries, then its answer for a plain (unpacked) batch
            first = position_ids[:, :1] - 1
            diff = torch.diff(position_ids, prepend=first, dim=-1)
            (diff != 1).cumsum(-1)
            return None
        return orig_find_packed(position_ids)

    orig_get_value = adam_mod._get_value

    def get_value(x):
        if _is_fake(x):
            return 1.0
        return orig_get_value(x)

    orig_dequant = dora_mod.dequantize_module_weight

    def dequantize_module_weight(module):
        w = getattr(module, "weight", None)
        if getattr(w, "vramplan_fake_4bit", False):
            import bitsandbytes.functional as F

            return F.dequantize_4bit(w.data, w.quant_state)
        return orig_dequant(module)

    import torch._meta_registrations as meta_registrations

    orig_grouped_meta = meta_registrations._meta_grouped_mm_common

    def grouped_mm_meta(mat_a, mat_b, scale_a, scale_b, offs=None, bias=None, scale_result=None, out_dtype=None, use_fast_accum=False):
        # torch's meta grouped_mm checks for bf16 only (the CUDA fast path); fp32 experts (a 4-bit base
        # upcasts them) run the same op on CPU (measured): same shapes, in fp32. Whether CUDA's kernel
        # takes fp32 is not checked here (a GPU session should: QLoRA on a MoE depends on it)
        if scale_a is None and mat_a.dtype == mat_b.dtype == torch.float32:
            out = orig_grouped_meta(mat_a.to(torch.bfloat16), mat_b.to(torch.bfloat16), None, None, offs, bias, scale_result, out_dtype, use_fast_accum)
            return torch.empty_strided(out.shape, out.stride(), dtype=torch.float32, device=out.device)
        return orig_grouped_meta(mat_a, mat_b, scale_a, scale_b, offs, bias, scale_result, out_dtype, use_fast_accum)

    with contextlib.ExitStack() as stack:
        stack.enter_context(_patched(meta_registrations, "_meta_grouped_mm_common", grouped_mm_meta))
        stack.enter_context(_patched(masking_utils, "is_tracing", is_tracing))
        stack.enter_context(_patched(masking_utils, "find_packed_sequence_indices", find_packed_sequence_indices))
        stack.enter_context(_patched(adam_mod, "_get_value", get_value))
        stack.enter_context(_patched(dora_mod, "dequantize_module_weight", dequantize_module_weight))
        if hasattr(lora_layer_mod, "dequantize_module_weight"):
            stack.enter_context(_patched(lora_layer_mod, "dequantize_module_weight", dequantize_module_weight))
        if run.device_kind == "cuda":
            orig_dropout = torch.nn.functional.dropout

            def cuda_dropout(input, p=0.5, training=True, inplace=False):
                if not training or p == 0.0:
                    return input
                if p == 1.0 or inplace:
                    return orig_dropout(input, p, training, inplace)
                return torch.native_dropout(input, p, True)[0]  # CUDA's fused kernel: bool mask

            stack.enter_context(_patched(torch.nn.functional, "dropout", cuda_dropout))
            stack.enter_context(_patched(torch.nn.functional, "scaled_dot_product_attention", _cuda_sdpa_dispatch(torch.nn.functional.scaled_dot_product_attention)))
        yield


# stored in each trace row's environment: re-estimation models the math fallback only for rows that had it
SDPA_DISPATCH = "math for fp32 with grouped kv heads (torch 2.11 CUDA)"


def _cuda_sdpa_dispatch(sdpa):
    """SDPA as CUDA dispatches it, as far as memory goes (planner/sdpa_dispatch.py): fp32 q/k/v with
    grouped kv heads and no mask run the math kernel; anything else the fused one the CPU picks."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def dispatched(query, key, value, attn_mask=None, *args, **kwargs):
        if attn_mask is None and query.dtype == torch.float32 and kwargs.get("enable_gqa") and key.shape[-3] < query.shape[-3]:
            with sdpa_kernel([SDPBackend.MATH]):
                return sdpa(query, key, value, attn_mask, *args, **kwargs)
        return sdpa(query, key, value, attn_mask, *args, **kwargs)

    return dispatched


def trace_step(hf_config: dict, run: RunConfig, steps: int = 2, seed: int = 0, round_to: int | None = None) -> dict:
    """Trace ``steps`` training steps of ``run`` on fake tensors; the result has ``measure_cpu``'s keys.

    Differences from ``measure_cpu``: ``losses`` are ``None`` (fake tensors hold no values),
    ``mode`` is ``"fake"``, the load phase holds only the final parameters (the build happens on
    meta), and with ``run.device_kind == "cuda"`` the CUDA behaviours listed in the module docstring
    are emulated (``round_to``, default 512 for cuda and 1 for cpu, is the block rounding). Two steps are the default: the first
    creates the optimizer state, the second is the steady state.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    cuda = run.device_kind == "cuda"
    if round_to is None:
        round_to = CUDA_BLOCK if cuda else 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(hf_config, run, meta=True)
        build_s = time.perf_counter() - t0
        notes = list(getattr(model, "vramplan_notes", []))
        if cuda:
            notes.append("CUDA emulated on fake CPU tensors: bool dropout masks, foreach optimizer, 512-byte blocks")
            if run.optimizer.startswith("paged-"):
                notes.append(
                    "paged optimizer: on a GPU the states of tensors with >= 1e5 elements live in CUDA managed "
                    "memory, outside torch.cuda.max_memory_allocated; they are counted here as ordinary tensors"
                )
        fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        tracker = LiveTensorTracker(round_to=round_to)
        with trace_patches(run), fake_mode, tracker:
            with tracker.phase("load", step=-1):
                materialize_fake(model, run)
            extra = describe_model(tracker, model)
            ledger = None
            if run.offload_activations:  # save_on_cpu's host copies go to a ledger, not the device count
                from .trainer.offload import HostLedger, count_offload

                ledger = HostLedger(keep_values=False)
                count_offload(model, ledger)
            trainable = [p for p in model.parameters() if p.requires_grad]
            with unset_fake_temporarily():  # bnb builds its quantization maps with .tolist()
                optimizer = make_optimizer(run, trainable, foreach=True if cuda else None)
            vocab = int(model.config.vocab_size)
            with tracker.phase("inputs", step=-1):
                ids = torch.randint(0, vocab, (run.batch, run.seq_len))
                labels = ids.clone()
            extra["input_bytes"] = unique_storage_bytes([ids, labels])
            extra.update(run_steps(tracker, model, optimizer, run, ids, labels, steps, record_loss=False))
            if ledger is not None:
                extra["host_peak_bytes"] = ledger.peak_bytes  # pinned host RAM of the offloaded inputs
    extra.update(
        seconds=time.perf_counter() - t0,
        build_seconds=build_s,
        mode="fake",
        round_to=round_to,
        notes=notes,
        run=run,
        steps=steps,
        seed=seed,
    )
    return summarize(tracker, steps, extra)
