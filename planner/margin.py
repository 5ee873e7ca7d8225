"""The advisor's safety margin: how much of a GPU's memory a recommendation keeps free.

The margin follows the evidence: with a calibration for the GPU it is 1.5 x that calibration's
worst held-out error (at least 1 %); without one, a stated default.
"""

from __future__ import annotations

from .overhead import Corrections

DEFAULT_MARGIN = 0.05
MIN_MARGIN = 0.01
ERROR_FACTOR = 1.5


def margin_ratio_for(corrections: Corrections | None) -> tuple[float, str]:
    """The fraction of GPU memory to keep free, and a sentence saying where it comes from.

    Args:
        corrections: the calibration in use for the GPU, or None.

    Returns:
        (ratio, note): e.g. (0.05, "margin 5% of memory (default): ...").
    """
    worst = corrections.held_out_worst_pct if corrections is not None else None
    if worst is not None:
        ratio = max(MIN_MARGIN, worst / 100 * ERROR_FACTOR)
        return ratio, (f"margin {ratio:.1%} of memory = {ERROR_FACTOR:g} x the worst held-out error ({worst:.1f}%) "
                       f"of {corrections.source}")
    return DEFAULT_MARGIN, (
        f"margin {DEFAULT_MARGIN:.0%} of memory (default): no GPU calibration matched; the tensor-level model is within 2% of "
        "full-size traces (calibrate/data), the allocator slack and CUDA context are defaults"
    )
