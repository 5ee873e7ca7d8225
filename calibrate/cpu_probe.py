"""Ground truth on CPU: build the model for a run, train a few steps, report peak live tensor bytes.

The statistic is the **peak of live tensor storage bytes** seen by ``LiveTensorTracker`` - the
analogue of ``torch.cuda.max_memory_allocated()`` (bytes held by tensors), *not* of
``max_memory_reserved()`` (the caching allocator's pool, fragmentation) nor of what ``nvidia-smi``
shows (plus CUDA context, cuBLAS workspaces, ...). Storages are counted once however many views
share them, at their exact byte size (``round_to=512`` emulates CUDA's block rounding). Kernel
scratch space that never becomes a tensor is not seen, on CPU or here.

One training step is what HF ``Trainer`` does::

    outputs = model(input_ids=ids, labels=ids)      # under torch.autocast for *-mixed precisions
    outputs.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
"""

from __future__ import annotations

import time
import warnings

import torch

from vramplan.planner.specs import RunConfig

from .cpu_tracker import CATEGORIES, LiveTensorTracker, quant_state_tensors, unique_storage_bytes
from .model_build import build_model, compute_dtype
from .trainer.chunked_loss import training_loss

STATISTIC = (
    "peak live tensor storage bytes (each storage once, exact nbytes): the analogue of "
    "torch.cuda.max_memory_allocated"
)
PHASES = ("load", "forward", "backward", "optimizer")
LR = 5e-5  # HF Trainer's default; irrelevant to memory
PROBE_EXAMPLES_PER_ROW = 4  # --packing probes: how many equal examples share a row


def make_optimizer(run: RunConfig, params, foreach: bool | None = None):
    """The optimizer for ``run.optimizer`` over ``params`` (trainable parameters only).

    ``foreach=None`` lets torch choose, as HF Trainer does: the per-tensor loop on CPU, the
    multi-tensor (foreach) kernels on CUDA.
    """
    params = list(params)
    if run.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=LR, foreach=foreach)
    if run.optimizer == "sgd":
        return torch.optim.SGD(params, lr=LR, foreach=foreach)
    import bitsandbytes as bnb

    cls = {
        "adamw-8bit": bnb.optim.AdamW8bit,
        "paged-adamw-8bit": bnb.optim.PagedAdamW8bit,
        "paged-adamw-32bit": bnb.optim.PagedAdamW32bit,
    }[run.optimizer]
    return cls(params, lr=LR)


def autocast_context(run: RunConfig, device_type: str = "cpu"):
    if run.precision.endswith("-mixed"):
        return torch.autocast(device_type, dtype=compute_dtype(run))
    return torch.autocast(device_type, enabled=False)


def _zeros() -> dict[str, int]:
    return dict.fromkeys(CATEGORIES, 0)


def summarize(tracker: LiveTensorTracker, steps: int, extra: dict) -> dict:
    """The result dict shared by ``measure_cpu`` and ``fake_trace.trace_step``."""
    train = [r for r in tracker.records if r.name in ("forward", "backward", "optimizer")]
    steady_steps = set(range(1, steps)) if steps > 1 else {0}
    train_rec = tracker.peak_record(names=("forward", "backward", "optimizer"))
    steady_rec = tracker.peak_record(names=("forward", "backward", "optimizer"), steps=steady_steps)
    overall = tracker.peak_record()
    per_step: list[dict[str, int]] = []
    for rec in train:
        while len(per_step) <= rec.step:
            per_step.append({})
        per_step[rec.step][rec.name] = max(per_step[rec.step].get(rec.name, 0), rec.peak_bytes)
    phase_peaks = {name: 0 for name in PHASES}
    phase_peaks.update(tracker.phase_peaks())
    steady_phase = {name: 0 for name in PHASES if name != "load"}
    steady_phase.update(tracker.phase_peaks(steps=steady_steps))
    result = {
        "statistic": STATISTIC,
        "peak_bytes": overall.peak_bytes if overall else 0,
        "train_peak_bytes": train_rec.peak_bytes if train_rec else 0,
        "steady_peak_bytes": steady_rec.peak_bytes if steady_rec else 0,
        "phase_peak_bytes": phase_peaks,
        "steady_phase_peak_bytes": steady_phase,
        "step_phase_peak_bytes": per_step,
        "peak_phase": train_rec.name if train_rec else None,
        "peak_step": train_rec.step if train_rec else None,
        "breakdown": dict(train_rec.breakdown) if train_rec else _zeros(),
        "steady_breakdown": dict(steady_rec.breakdown) if steady_rec else _zeros(),
        "load_breakdown": dict(overall.breakdown) if overall and overall.name == "load" else None,
        "records": [r.as_dict() for r in tracker.records],
    }
    result.update(extra)
    return result


def describe_model(tracker: LiveTensorTracker, model) -> dict:
    """Label the model's storages in the tracker and report their sizes."""
    tracker.track_module(model)
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    quantized = sum(1 for p in params if getattr(p, "quant_state", None) is not None)
    return {
        "quantized_linears": quantized,
        "param_bytes": unique_storage_bytes(params),
        "trainable_param_bytes": unique_storage_bytes(trainable),
        "buffer_bytes": unique_storage_bytes(list(model.buffers())),
        "quant_state_bytes": unique_storage_bytes(quant_state_tensors(model)),
        "tracked_param_bytes": tracker.totals["params"],
    }


def run_steps(tracker: LiveTensorTracker, model, optimizer, run: RunConfig, ids, labels, steps: int,
              record_loss: bool = True, inputs: dict | None = None) -> dict:
    """``steps`` HF-Trainer-style training steps, each phase inside ``tracker.phase``."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    out: dict = {"losses": []}
    model.train()
    for step in range(steps):
        tracker.step = step
        for _ in range(run.grad_accum):  # micro-batches: the later ones add into the kept gradients
            with tracker.phase("forward"):
                with autocast_context(run):
                    loss = training_loss(model, run, ids, labels, **(inputs or {}))  # the model's own loss, or --loss chunked
                    loss = loss / run.grad_accum if run.grad_accum > 1 else loss  # as HF Trainer scales it
                # Trainer keeps only the loss: the logits die with the model's outputs
            with tracker.phase("backward"):
                loss.backward()
            if step == 0 and "grad_bytes" not in out:
                out["grad_bytes"] = unique_storage_bytes([p.grad for p in trainable if p.grad is not None])
        out["losses"].append(float(loss.detach()) * run.grad_accum if record_loss else None)
        del loss
        with tracker.phase("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if step == 0:
            tracker.track_optimizer(optimizer)
            out["optimizer_state_bytes"] = unique_storage_bytes(
                [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
            )
    tracker.remove_grad_hooks()
    return out


def measure_cpu(hf_config: dict, run: RunConfig, steps: int = 3, seed: int = 0, fp32_matmul: bool = True) -> dict:
    """Measure ``steps`` real training steps on CPU for ``run`` on the model ``hf_config`` describes.

    Returns a dict (all sizes in bytes; "peak" = peak live tensor storage bytes, the analogue of
    ``torch.cuda.max_memory_allocated``):

    statistic               what the numbers are (text)
    peak_bytes              max over everything, model build ("load") included
    train_peak_bytes        max over the training phases of all steps
    steady_peak_bytes       max over the training phases of steps 2.. (step 1 allocates the
                            optimizer state; the steady state is what every later step needs)
    phase_peak_bytes        {"load", "inputs", "forward", "backward", "optimizer"} -> max peak of that phase
    steady_phase_peak_bytes {"forward", "backward", "optimizer"} -> same, steps 2.. only
    step_phase_peak_bytes   [ {phase: peak} for each step ]
    peak_phase, peak_step   where train_peak_bytes happened (step counted from 0)
    breakdown               {category: bytes} live at the train peak (categories: see cpu_tracker)
    steady_breakdown        {category: bytes} live at the steady peak
    load_breakdown          {category: bytes} at the load peak when that is the overall peak, else None
    records                 every phase run: phase, step, start/end/peak bytes, breakdown
    param_bytes             unique storage bytes of model.parameters() after the build
    trainable_param_bytes   same for requires_grad parameters
    buffer_bytes, quant_state_bytes, input_bytes
    grad_bytes              .grad storages alive after step 1's backward
    optimizer_state_bytes   optimizer state alive after step 1
    tracked_param_bytes     what the tracker labelled "params" after the build (== param_bytes)
    quantized_linears       how many Linears hold 4-bit weights
    losses                  [loss per step]
    seconds                 wall time of build + steps
    build_seconds           wall time of the build alone
    round_to                storage rounding used (1: exact bytes)
    mode                    "cpu"
    notes                   where the run differs from the asked-for one (e.g. flash -> sdpa)
    run, steps, seed

    ``fp32_matmul`` (default on) computes bf16/fp16 matmuls in fp32 and casts the result back: the
    same output tensors, so the same bytes, but 5-50x faster on CPUs without AVX512-BF16.

    CPU kernels differ from CUDA ones in a few saved tensors: dropout saves a mask in the input
    dtype (CUDA: a bool mask), AdamW runs its per-tensor loop (CUDA: foreach), and bitsandbytes'
    paged optimizers fall back to ordinary state tensors. ``fake_trace.trace_step`` with
    ``run.device_kind == "cuda"`` emulates the CUDA choices.
    """
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    tracker = LiveTensorTracker(fp32_matmul=fp32_matmul)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with tracker:
            with tracker.phase("load", step=-1):
                model = build_model(hf_config, run, device="cpu")
            build_s = time.perf_counter() - t0
            extra = describe_model(tracker, model)
            ledger = None
            if run.offload_activations:  # save_on_cpu's host copies go to a ledger, not the device count
                from .trainer.offload import HostLedger, count_offload

                ledger = HostLedger()
                count_offload(model, ledger)
            optimizer = make_optimizer(run, [p for p in model.parameters() if p.requires_grad])
            vocab = int(model.config.vocab_size)
            with tracker.phase("inputs", step=-1):
                gen = torch.Generator().manual_seed(seed)
                ids = torch.randint(0, vocab, (run.batch, run.seq_len), generator=gen)
                labels = ids.clone()
                inputs = {}
                if run.packing:  # four examples per row, positions restarting: the packed (block-diagonal) path
                    from .trainer.packing import probe_position_ids

                    inputs["position_ids"] = probe_position_ids(run.batch, run.seq_len, PROBE_EXAMPLES_PER_ROW)
            extra["input_bytes"] = unique_storage_bytes([ids, labels, *inputs.values()])
            extra.update(run_steps(tracker, model, optimizer, run, ids, labels, steps, inputs=inputs))
            if ledger is not None:
                extra["host_peak_bytes"] = ledger.peak_bytes  # pinned host RAM of the offloaded inputs
    extra.update(
        seconds=time.perf_counter() - t0,
        build_seconds=build_s,
        mode="cpu",
        round_to=1,
        notes=list(getattr(model, "vramplan_notes", [])),
        run=run,
        steps=steps,
        seed=seed,
    )
    return summarize(tracker, steps, extra)
