"""Ground truth on a GPU: the same training steps as the CPU probe, read from CUDA and NVML.

Three statistics, each stated: `torch.cuda.max_memory_allocated` (live tensors),
`torch.cuda.max_memory_reserved` (the caching allocator's segments) and the process's used
memory from NVML (what nvidia-smi shows, CUDA context included). Steady state: the peak
statistics are reset after step 1, once the optimizer states exist.
"""

from __future__ import annotations

import gc
import os
import time

import torch

from vramplan.planner.specs import RunConfig

from .cpu_probe import autocast_context, make_optimizer
from .model_build import build_model


def nvml_process_used_bytes() -> int | None:
    """This process's GPU memory from NVML, or the device's used memory when per-process is hidden."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            index = torch.cuda.current_device()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == os.getpid() and proc.usedGpuMemory:
                    return int(proc.usedGpuMemory)
            return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVML unavailable: the allocator statistics still stand
        return None


def measure_cuda(hf_config: dict, run: RunConfig, steps: int = 3, seed: int = 0) -> dict:
    """Measure `steps` training steps on the current CUDA device.

    Returns bytes: `steady_peak_bytes` (max_memory_allocated over steps 2..), `steady_reserved_bytes`
    (max_memory_reserved), `device_used_bytes` (NVML, max over phase ends), `steady_phase_peak_bytes`
    per phase, `load_bytes`, `losses`, `seconds`.

    Raises:
        torch.cuda.OutOfMemoryError: the caller records it as an `oom` measurement.
    """
    start = time.perf_counter()
    torch.manual_seed(seed)
    # an earlier 4-bit model outlives `del` until the cyclic GC (Params4bit.module points back at its
    # Linear4bit) and would count in this run's peaks: rows measured before this line carry such leftovers
    gc.collect()
    torch.cuda.empty_cache()
    before_bytes = torch.cuda.memory_allocated()
    model = build_model(hf_config, run, device="cuda")
    load_bytes = torch.cuda.memory_allocated()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(run, trainable)
    ids = torch.randint(0, int(hf_config["vocab_size"]), (run.batch, run.seq_len), device="cuda")
    phases = {"forward": 0, "backward": 0, "optimizer": 0}
    device_used, reserved = 0, 0
    losses = []
    for step in range(steps):
        for phase in phases:
            if step >= 1:
                torch.cuda.reset_peak_memory_stats()
            if phase == "forward":
                with autocast_context(run, "cuda"):
                    loss = model(input_ids=ids, labels=ids).loss  # Trainer keeps only the loss
            elif phase == "backward":
                loss.backward()
                losses.append(float(loss.detach()))
                del loss
            else:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            if step >= 1:
                phases[phase] = max(phases[phase], torch.cuda.max_memory_allocated())
                reserved = max(reserved, torch.cuda.max_memory_reserved())
            used = nvml_process_used_bytes()
            if used is not None and step >= 1:
                device_used = max(device_used, used)
    return {
        "statistic": "torch.cuda.max_memory_allocated / max_memory_reserved / NVML process used, steps 2..",
        "steady_peak_bytes": max(phases.values()),
        "steady_reserved_bytes": reserved,
        "device_used_bytes": device_used or None,
        "steady_phase_peak_bytes": phases,
        "peak_phase": max(phases, key=phases.get),
        "load_bytes": int(load_bytes),
        # stored as the row's categories: what was allocated before the build (0 when nothing leaked) and after it
        "steady_breakdown": {"allocated_before_build": int(before_bytes), "allocated_after_build": int(load_bytes)},
        "losses": losses,
        "seconds": time.perf_counter() - start,
        "mode": "cuda",
    }
