"""The error table: estimate vs measurement per run, and per method and source, before and after calibration."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

from vramplan.planner.methods import METHOD_KEYS
from vramplan.planner.overhead import Corrections

from .fit import estimate_for, leave_one_config_out, pct_error
from .store import RunRecord


@dataclass(frozen=True)
class ErrorSummary:
    method: str
    source: str
    count: int
    median_abs_pct: float
    worst_abs_pct: float
    median_abs_pct_calibrated: float | None
    worst_abs_pct_calibrated: float | None
    median_abs_pct_reserved: float | None = None
    median_abs_pct_device: float | None = None


def _current_estimates(record: RunRecord) -> tuple[int, int, int]:
    breakdown = estimate_for(record, Corrections())
    return breakdown.peak_allocated_bytes, breakdown.peak_reserved_bytes, breakdown.device_used_bytes


def _group(record: RunRecord) -> str:
    """The error table's group: the method, and for a VLM run its family and stage too."""
    if "vlm" in record.run_config:
        from .vlm_runner import vlm_label

        return vlm_label(record)
    return record.run_config.get("method")


def error_rows(records: list[RunRecord], current: bool = False) -> list[dict]:
    """One row per measured run (ok ones get errors; oom/error ones are listed with their outcome).

    By default the estimate is the one stored with the run (made before it ran); `current`
    re-estimates every run with this version of the model instead. A config measured more than
    once counts once: its latest measurement (`calibrate.resume.latest_per_config`).
    """
    from .resume import latest_per_config

    records = latest_per_config(records)
    if current:
        records = [
            replace(r, est_peak_allocated_bytes=a, est_peak_reserved_bytes=b, est_device_used_bytes=c)
            for r in records
            for a, b, c in [_current_estimates(r)]
        ]
    held_out = {}
    for source in sorted({r.source for r in records}):
        for prediction in leave_one_config_out([r for r in records if r.source == source]):
            held_out[prediction.record.id] = prediction
    rows = []
    for record in records:
        prediction = held_out.get(record.id)
        rows.append({
            "id": record.id,
            "method": _group(record),
            "source": record.source,
            "outcome": record.outcome,
            "model": record.model_name,
            "device": record.device_name,
            "estimated_bytes": record.est_peak_allocated_bytes,
            "measured_bytes": record.peak_allocated_bytes,
            "error_pct": pct_error(record.est_peak_allocated_bytes, record.peak_allocated_bytes),
            "calibrated_estimated_bytes": prediction.allocated if prediction else None,
            "calibrated_error_pct": pct_error(prediction.allocated, record.peak_allocated_bytes) if prediction else None,
            "estimated_reserved_bytes": record.est_peak_reserved_bytes,
            "measured_reserved_bytes": record.peak_reserved_bytes,
            "reserved_error_pct": pct_error(record.est_peak_reserved_bytes, record.peak_reserved_bytes),
            "estimated_device_used_bytes": record.est_device_used_bytes,
            "measured_device_used_bytes": record.device_used_bytes,
            "device_used_error_pct": pct_error(record.est_device_used_bytes, record.device_used_bytes),
            "error_message": record.error_message,
            "config": record.run_config,
        })
    return rows


def _median_abs(values: list[float | None]) -> float | None:
    values = [abs(v) for v in values if v is not None]
    return statistics.median(values) if values else None


def _worst_abs(values: list[float | None]) -> float | None:
    values = [abs(v) for v in values if v is not None]
    return max(values) if values else None


def summarize(rows: list[dict]) -> list[ErrorSummary]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row["error_pct"] is not None:
            groups.setdefault((row["method"], row["source"]), []).append(row)
    order = {key: index for index, key in enumerate(METHOD_KEYS)}
    summaries = []
    for (method, source), group in sorted(groups.items(), key=lambda item: (item[0][1], order.get(item[0][0], 9))):
        summaries.append(ErrorSummary(
            method=method,
            source=source,
            count=len(group),
            median_abs_pct=_median_abs([r["error_pct"] for r in group]),
            worst_abs_pct=_worst_abs([r["error_pct"] for r in group]),
            median_abs_pct_calibrated=_median_abs([r["calibrated_error_pct"] for r in group]),
            worst_abs_pct_calibrated=_worst_abs([r["calibrated_error_pct"] for r in group]),
            median_abs_pct_reserved=_median_abs([r["reserved_error_pct"] for r in group]),
            median_abs_pct_device=_median_abs([r["device_used_error_pct"] for r in group]),
        ))
    return summaries
