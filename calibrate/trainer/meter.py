"""Live peak memory while training, and the progress bar that shows it.

CUDA: ``torch.cuda.max_memory_allocated`` (live tensors), reset after the session's first step so
the recorded peak is the steady state, as in the calibration probe. CPU: there is no allocator
statistic, so the first ``tracked_steps`` steps run under ``LiveTensorTracker`` (exact live tensor
bytes, the analogue of max_memory_allocated, but slow); later steps show the process's peak RSS
(``resource.getrusage``), which counts everything the process holds, Python and libraries included.

The measured steps (``meter.measuring``: the first two) get batches padded to ``seq_len``, so the
recorded peak is the worst case the planner estimates, not that of whatever rows came first.
"""

from __future__ import annotations

import contextlib
import resource
import sys

import torch

from ..cpu_tracker import LiveTensorTracker
from .fallback import format_bytes

CUDA_STATISTIC = "torch.cuda.max_memory_allocated over steps 2.. (steady state; step 2 padded to seq_len)"
CPU_STATISTIC = "peak live tensor storage bytes (LiveTensorTracker), step {n} of the first {n} (padded to seq_len)"


def max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB


class CudaMeter:
    def __init__(self):
        torch.cuda.reset_peak_memory_stats()
        self.first_peak = 0
        self.steps = 0
        self.tracking = False  # the allocator statistics cost nothing: every step counts for speed

    @property
    def measuring(self) -> bool:
        return self.steps < 2  # step 1 allocates the optimizer state, step 2 is the steady state

    @contextlib.contextmanager
    def step(self, model, optimizer):
        yield
        self.steps += 1
        if self.steps == 1:
            self.first_peak = torch.cuda.max_memory_allocated()
            torch.cuda.reset_peak_memory_stats()

    def phase(self, name: str):
        return contextlib.nullcontext()

    def text(self) -> str:
        return f"peak {format_bytes(max(self.first_peak, torch.cuda.max_memory_allocated()))}"

    def results(self) -> dict:
        from ..cuda_probe import nvml_process_used_bytes

        steady = torch.cuda.max_memory_allocated() if self.steps > 1 else self.first_peak
        return {
            "statistic": CUDA_STATISTIC,
            "peak_allocated_bytes": int(steady) or None,
            "peak_reserved_bytes": int(torch.cuda.max_memory_reserved()) or None,
            "device_used_bytes": nvml_process_used_bytes(),
            "first_step_peak_bytes": int(self.first_peak),
            "phases": {},
            "categories": {},
        }


class CpuMeter:
    def __init__(self, tracked_steps: int = 2):
        self.tracked_steps = max(0, tracked_steps)
        self.tracker = LiveTensorTracker() if self.tracked_steps else None
        self.steps = 0

    @property
    def tracking(self) -> bool:
        return self.tracker is not None and self.steps < self.tracked_steps

    measuring = tracking

    @contextlib.contextmanager
    def step(self, model, optimizer):
        if not self.tracking:
            yield
            self.steps += 1
            return
        tracker = self.tracker
        with tracker:
            if self.steps == 0:  # storages made before tracking began: label them once
                tracker.track_module(model)
                tracker.track_optimizer(optimizer)
            tracker.step = self.steps
            yield
        self.steps += 1
        if self.steps == self.tracked_steps:
            tracker.remove_grad_hooks()

    def phase(self, name: str):
        return self.tracker.phase(name) if self.tracking else contextlib.nullcontext()

    def text(self) -> str:
        if self.tracker is not None and self.tracker.peak_bytes:
            return f"peak {format_bytes(self.tracker.peak_bytes)} (steps 1-{min(self.steps, self.tracked_steps)})"
        return f"rss {format_bytes(max_rss_bytes())}"

    def results(self) -> dict:
        out = {"statistic": None, "peak_allocated_bytes": None, "peak_reserved_bytes": None, "device_used_bytes": None,
               "phases": {}, "categories": {}, "max_rss_bytes": max_rss_bytes()}
        tracked = min(self.steps, self.tracked_steps)
        if self.tracker is None or tracked == 0:
            return out
        steady = {tracked - 1}  # step 1 allocates the optimizer state; step 2 is the steady state
        names = ("forward", "backward", "optimizer")
        record = self.tracker.peak_record(names=names, steps=steady)
        out.update(
            statistic=CPU_STATISTIC.format(n=tracked),
            peak_allocated_bytes=record.peak_bytes if record else None,
            phases={k: v for k, v in self.tracker.phase_peaks(steps=steady).items() if k in names},
            categories=dict(record.breakdown) if record else {},
            first_step_peak_bytes=self.tracker.peak_bytes,
        )
        return out


def make_meter(device: str, tracked_steps: int):
    return CudaMeter() if device == "cuda" else CpuMeter(tracked_steps)


def progress_bar(enabled: bool):
    """A rich progress bar on stderr: step, loss, tokens/s, peak memory, time left."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )
