"""Leftovers in the shipped CUDA rows: memory an earlier run in the same process had not freed.

The H200 matrix (calibrate/data/cuda-h200.db) measured every config in one process, and its
probe did not run the cyclic garbage collector between configs. A 4-bit model outlives `del`
until that collector runs (bitsandbytes' `Params4bit.module` points back at its `Linear4bit`),
so the 4-bit weights of earlier runs stayed allocated and count in later rows' peaks. Rows
measured since the probe collects first store what was allocated before the build
(`categories["allocated_before_build"]`); for the older rows the optimizer phase tells: it holds
only weights, gradients and optimizer states, so a measured optimizer-phase peak above the
estimate's by more than the cuBLAS workspaces (two of 32 MiB on that GPU, outside the model's
9 MiB) is a leftover.
"""

from __future__ import annotations

from .store import RunRecord

CLEAN_SLACK_BYTES = 128 * 2**20  # cuBLAS workspaces and allocator rounding: not a leftover


def leftover_bytes(record: RunRecord, breakdown) -> int:
    """What was allocated before this row's model was built, measured or (older rows) inferred."""
    stored = (record.categories or {}).get("allocated_before_build")
    if stored is not None:
        return int(stored)
    return max(0, int(record.phases.get("optimizer", 0)) - breakdown.phase_total("optimizer"))


def is_clean(record: RunRecord, breakdown) -> bool:
    """Whether the row's peaks are its own run's alone (no leftover beyond the workspaces)."""
    return leftover_bytes(record, breakdown) <= CLEAN_SLACK_BYTES
