"""Memory outside the tensors: cuBLAS workspace, allocator slack, CUDA context.

The defaults are documented starting points, not measurements; `vramplan calibrate` fits
them per GPU and software stack and the estimate says which calibration it used.
"""

from __future__ import annotations

from dataclasses import dataclass

from .breakdown import ALL_PHASES, DEVICE, RESERVED, Term
from .specs import GpuSpec, RunConfig
from .savers import slack_ratio
from .units import MIB


@dataclass(frozen=True)
class Corrections:
    """The model's uncertain terms, fitted by `vramplan calibrate` (defaults until then)."""

    cuda_context_bytes: int = 512 * MIB  # rough: torch 2.x context + kernels, lazy loading on
    allocator_slack_ratio: float = 0.05  # rough: reserved/allocated - 1 in steady state
    cublas_workspace_bytes: int = 8 * MIB + 1 * MIB  # torch default ":4096:2:16:8" on pre-Hopper
    activation_scale: float = 1.0  # multiplies every activations/* term; 1.0 = the analytic model
    method_activation_scales: tuple[tuple[str, float], ...] = ()  # per-method scale where measured enough
    held_out_worst_pct: float | None = None  # worst leave-one-config-out |error| of this calibration
    source: str = "defaults (uncalibrated)"

    def scale_for(self, method: str) -> float:
        return dict(self.method_activation_scales).get(method, self.activation_scale)


HOPPER_KEYS = ("h100", "h200")
HOPPER_CUBLAS_WORKSPACE = 32 * MIB  # torch uses a 32 MiB cuBLAS workspace on sm90


def overhead_bytes(run: RunConfig, gpu: GpuSpec | None, peak_allocated: int, params: Corrections) -> tuple[int, int, int]:
    """(cuBLAS workspace, allocator slack, CUDA context) bytes; all 0 on a CPU run."""
    if run.device_kind != "cuda":
        return 0, 0, 0
    workspace = HOPPER_CUBLAS_WORKSPACE if gpu is not None and gpu.key in HOPPER_KEYS else params.cublas_workspace_bytes
    ratio = slack_ratio(run, params.allocator_slack_ratio)  # --expandable-segments shrinks it (planner/savers.py)
    return workspace, int((peak_allocated + workspace) * ratio), params.cuda_context_bytes


def overhead_terms(run: RunConfig, gpu: GpuSpec | None, peak_allocated: int, params: Corrections) -> list[Term]:
    """CUDA-only terms; none on a CPU run."""
    if run.device_kind != "cuda":
        return []
    workspace, slack, context = overhead_bytes(run, gpu, peak_allocated, params)
    return [
        Term("overhead/cublas_workspace", workspace, "cuBLAS workspace, allocated through torch's caching allocator", ALL_PHASES),
        Term(
            "overhead/allocator_slack",
            slack,
            f"reserved over allocated: {slack_ratio(run, params.allocator_slack_ratio):.0%} ({params.source})"
            + (", expandable segments (assumed half the slack, not yet measured on a GPU)" if run.expandable_segments else ""),
            ALL_PHASES,
            RESERVED,
        ),
        Term("overhead/cuda_context", context, f"CUDA context and kernels ({params.source})", ALL_PHASES, DEVICE),
    ]
