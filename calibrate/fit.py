"""Fit the model's uncertain terms to stored measurements and validate on held-out runs.

Fitted per device and software stack: an activation scale (1.0 = the analytic model) by
minimising squared relative error of peak allocated; on CUDA also the allocator's
reserved-over-allocated ratio and the memory outside the allocator (CUDA context). Every
error reported after calibration is leave-one-config-out: the run being predicted never
took part in the fit that predicts it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

from vramplan.planner.architectures import ANALYTIC_FAMILIES, spec_from_config
from vramplan.planner.estimator import estimate
from vramplan.planner.overhead import Corrections
from vramplan.planner.specs import ModelSpec, RunConfig
from vramplan.planner.stack import version_problem

from .runner import run_config_from_dict
from .store import RunRecord

MIN_RUNS_PER_METHOD = 3  # fewer runs of a method: it shares the scale fitted on all methods
SCALE_GRID = [round(0.70 + 0.005 * i, 3) for i in range(121)]  # 0.70 .. 1.30


@dataclass(frozen=True)
class Prediction:
    record: RunRecord
    allocated: int
    reserved: int | None
    device_used: int | None


def spec_of(record: RunRecord) -> ModelSpec:
    """The model of a stored run, from the config.json stored with it (the model itself may be gone)."""
    config = record.model_config
    if config.get("model_type") in ANALYTIC_FAMILIES:
        return spec_from_config(config, record.model_name, source="stored config")
    from vramplan.planner.inventory import spec_from_meta_model

    return spec_from_meta_model(config, record.model_name)


def estimate_for(record: RunRecord, corrections: Corrections):
    if "vlm" in record.run_config:  # a vision-language run: components and stage (calibrate.vlm_runner)
        from .vlm_runner import vlm_estimate_for

        return vlm_estimate_for(record, corrections)
    spec = spec_of(record)
    return estimate(spec, run_of(record), None, corrections).breakdown


def run_of(record: RunRecord) -> RunConfig:
    """The record's run, modelled for the transformers it was measured with (planner/stack.py)."""
    return as_measured(record, run_config_from_dict(record.run_config))


def as_measured(record: RunRecord, run: RunConfig) -> RunConfig:
    """`run` as `record` ran it: its transformers' memory paths, and for a trace made before the
    trace emulated CUDA's SDPA dispatch (no `sdpa_dispatch` in its environment), the fused kernel."""
    version = record.environment.get("libraries", {}).get("transformers")
    if run.transformers_version is None and isinstance(version, str) and version_problem(version) is None:
        run = replace(run, transformers_version=version)
    if getattr(record, "source", None) == "trace" and "sdpa_dispatch" not in record.environment:
        run = replace(run, cuda_math_sdpa=False)
    return run


def _usable(records: list[RunRecord]) -> list[RunRecord]:
    return [r for r in records if r.outcome == "ok" and r.peak_allocated_bytes]


def _squared_errors(usable: list[RunRecord]) -> dict[int, list[float]]:
    """Per run, the squared relative error of peak allocated at every grid scale (computed once)."""
    table = {}
    for record in usable:
        measured = record.peak_allocated_bytes
        if "vlm" in record.run_config:  # a vision-language run (calibrate.vlm_runner)
            table[record.id] = [((estimate_for(record, Corrections(activation_scale=scale)).peak_allocated_bytes - measured) / measured) ** 2 for scale in SCALE_GRID]
            continue
        spec, run = spec_of(record), run_of(record)
        table[record.id] = [
            ((estimate(spec, run, None, Corrections(activation_scale=scale)).breakdown.peak_allocated_bytes - measured) / measured) ** 2
            for scale in SCALE_GRID
        ]
    return table


def _best_scale(usable: list[RunRecord], errors: dict[int, list[float]]) -> float:
    totals = [sum(errors[r.id][i] for r in usable) for i in range(len(SCALE_GRID))]
    return SCALE_GRID[totals.index(min(totals))]


def _corrections_from(usable: list[RunRecord], errors: dict[int, list[float]], label: str) -> Corrections:
    if not usable:
        return Corrections()
    scale = _best_scale(usable, errors)
    by_method: dict[str, list[RunRecord]] = {}
    for record in usable:
        by_method.setdefault(record.run_config["method"], []).append(record)
    method_scales = tuple(
        (method, _best_scale(runs, errors)) for method, runs in sorted(by_method.items()) if len(runs) >= MIN_RUNS_PER_METHOD
    )
    defaults = Corrections()
    slack = [(r.peak_reserved_bytes - r.peak_allocated_bytes) / r.peak_allocated_bytes for r in usable if r.peak_reserved_bytes]
    outside = [r.device_used_bytes - r.peak_reserved_bytes for r in usable if r.device_used_bytes and r.peak_reserved_bytes]
    return Corrections(
        cuda_context_bytes=int(statistics.median(outside)) if outside else defaults.cuda_context_bytes,
        allocator_slack_ratio=statistics.median(slack) if slack else defaults.allocator_slack_ratio,
        activation_scale=scale,
        method_activation_scales=method_scales,
        source=label,
    )


def fit_corrections(records: list[RunRecord], label: str) -> Corrections:
    """Corrections that best explain `records` (ok runs with a measured peak)."""
    usable = _usable(records)
    return _corrections_from(usable, _squared_errors(usable), label)


def predict(record: RunRecord, corrections: Corrections) -> Prediction:
    breakdown = estimate_for(record, corrections)
    allocated = breakdown.peak_allocated_bytes
    reserved = int(allocated * (1 + corrections.allocator_slack_ratio))
    return Prediction(record, allocated, reserved, reserved + corrections.cuda_context_bytes)


def config_key(record: RunRecord) -> tuple:
    return (record.model_name, tuple(sorted((k, str(v)) for k, v in record.run_config.items())))


def leave_one_config_out(records: list[RunRecord]) -> list[Prediction]:
    """Predict each config from corrections fitted on every other config."""
    usable = _usable(records)
    errors = _squared_errors(usable)
    predictions = []
    for record in usable:
        key = config_key(record)
        others = [r for r in usable if config_key(r) != key]
        predictions.append(predict(record, _corrections_from(others, errors, "held out")))
    return predictions


def pct_error(estimated: int | None, measured: int | None) -> float | None:
    if not estimated or not measured:
        return None
    return 100.0 * (estimated - measured) / measured


def held_out_worst_pct(records: list[RunRecord]) -> float | None:
    """Worst leave-one-config-out |error| of the statistic that decides fitting: device used where measured."""
    worst = None
    for prediction in leave_one_config_out(records):
        record = prediction.record
        if record.device_used_bytes:
            error = pct_error(prediction.device_used, record.device_used_bytes)
        else:
            error = pct_error(prediction.allocated, record.peak_allocated_bytes)
        if error is not None:
            worst = abs(error) if worst is None else max(worst, abs(error))
    return worst
