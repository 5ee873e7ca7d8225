"""A trainer run as a `RunRecord`: the estimate made before it, what was measured, how it went.

``run_config`` is exactly ``asdict(RunConfig)`` (the calibration code rebuilds the RunConfig from
it); everything only the trainer knows (gradient accumulation, tokens/s, the loss curve, the
statistic the peak is) goes under ``environment["trainer"]``, marked ``kind: "vramplan run"``.
"""

from __future__ import annotations

import math
from dataclasses import asdict

from ..store import RunRecord

LOSS_CURVE_POINTS = 200


def loss_curve(losses: list[float]) -> list[list[float]]:
    """(step, loss) pairs, thinned to at most LOSS_CURVE_POINTS for the store."""
    stride = max(1, math.ceil(len(losses) / LOSS_CURVE_POINTS))
    return [[i + 1, round(loss, 5)] for i, loss in enumerate(losses) if i % stride == 0 or i == len(losses) - 1]


def rate(state: dict) -> float:
    """Tokens/s over the unmeasured steps (measured ones are padded, and tracked on CPU), else over all."""
    tokens, seconds = state["timed_tokens"], state["timed_seconds"]
    if not seconds:
        tokens, seconds = tokens + state["measured_tokens"], seconds + state["measured_seconds"]
    return tokens / seconds if seconds else 0.0


def run_record(source, outcome, error, model_name, model_config, run, env, est, measured, state, trainer, command, duration) -> RunRecord:
    b = est.breakdown
    trainer = {
        "kind": "vramplan run", "effective_batch": run.batch * trainer["grad_accum"], "steps": state["step"],
        "start_step": state.get("start_step", 0), "loss_curve": loss_curve(state["losses"]), "tokens_per_s": rate(state),
        "statistic": measured.get("statistic"), "first_step_peak_bytes": measured.get("first_step_peak_bytes"),
        "max_rss_bytes": measured.get("max_rss_bytes"), **trainer,
    }
    return RunRecord(
        source=source, outcome=outcome, error_message=error, model_name=model_name, model_config=model_config,
        run_config=asdict(run), device_name=env["device_name"], device_total_bytes=env.get("device_total_bytes"),
        stack=env["stack"], environment={**env, "trainer": trainer},
        estimate={"terms": b.by_name(), "at_peak": b.at_peak(), "peak_phase": b.peak_phase},
        est_peak_allocated_bytes=b.peak_allocated_bytes, est_peak_reserved_bytes=b.peak_reserved_bytes,
        est_device_used_bytes=b.device_used_bytes, peak_allocated_bytes=measured.get("peak_allocated_bytes"),
        peak_reserved_bytes=measured.get("peak_reserved_bytes"), device_used_bytes=measured.get("device_used_bytes"),
        phases=measured.get("phases", {}), categories=measured.get("categories", {}), command=command, duration_s=duration,
    )
