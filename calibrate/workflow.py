"""The `vramplan calibrate` workflow: choose the matrix, measure and store each run, fit; report; trace.

The command parses flags, calls one of these and renders what it returns. Each function opens
the measurement store itself (`db` None: the user data directory).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from vramplan.planner.errors import ConfigError
from vramplan.planner.overhead import Corrections
from vramplan.planner.specs import RunConfig

from .store import RunRecord, Store

TRACE_STATISTIC = "peak live tensor bytes of a steady-state step on fake tensors (the analogue of max_memory_allocated)"


def resolve_device(device: str | None) -> str:
    """`--device`: cuda where torch sees one, else cpu; `trace` as given.

    Raises:
        ConfigError: cuda asked for but not visible.
    """
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible to torch; use --device cpu")
    return device


# ---------------------------------------------------------------- measuring a matrix
def select_matrix(device: str, preset: str, models: tuple[str, ...] = (), methods: tuple[str, ...] = (),
                  where: tuple[str, ...] = ()) -> list[tuple[str, RunConfig]]:
    """The preset's (model name, run) pairs for `device`, kept to `models`, `methods` and `where` when given.

    `where` holds `field=value` conditions on the run settings (`packing=true`, `precision=bf16-mixed`).

    Raises:
        ConfigError: the filters leave nothing to measure.
    """
    from .matrix import calibration_matrix

    matrix = calibration_matrix(device, preset)
    if models:
        matrix = [(m, r) for m, r in matrix if m in set(models)]
    if methods:
        matrix = [(m, r) for m, r in matrix if r.method in set(methods)]
    for field, value in (_condition(text) for text in where):
        matrix = [(m, r) for m, r in matrix if str(getattr(r, field, None)).lower() == value]
    if not matrix:
        raise ConfigError("--models/--methods/--where left nothing to measure in this preset")
    return matrix


def _condition(text: str) -> tuple[str, str]:
    """`field=value` of `--where`, checked against the run settings."""
    field, sep, value = text.partition("=")
    if not sep or field.strip() not in RunConfig.__dataclass_fields__:
        raise ConfigError(f"--where {text!r}: give FIELD=VALUE with a run setting as FIELD ({', '.join(RunConfig.__dataclass_fields__)})")
    return field.strip(), value.strip().lower()


@dataclass(frozen=True)
class MatrixResult:
    """What a measured matrix left in the store."""

    runs: int  # measured now
    counts: dict[str, int]  # outcome (ok, oom, error) -> runs
    corrections: Corrections  # fitted over every stored run of this device and stack
    device_name: str
    store_path: Path
    skipped: int = 0  # configs the store already held a measurement of (not measured again)


def run_matrix(
    matrix: list[tuple[str, RunConfig]],
    device: str,
    steps: int,
    db=None,
    command: str | None = None,
    before: Callable[[str, RunConfig], None] | None = None,
    after: Callable[[RunRecord], None] | None = None,
    redo: bool = False,
    on_skip: Callable[[str, RunConfig], None] | None = None,
) -> MatrixResult:
    """Estimate, measure and store every run, then fit and store the calibration of this device and stack.

    Args:
        matrix: (model name, run) pairs, e.g. from `select_matrix`.
        device: cuda, cpu or trace.
        steps: training steps per measured run.
        db: the store path (None: the user data directory).
        command: the command line, stored with each run.
        before, after: called around each run (progress display).
        redo: measure configs the store already holds a measurement of (by default they are skipped,
            so a killed matrix re-run finishes where it stopped: `calibrate.resume`).
        on_skip: called for each config skipped as already measured.
    """
    from vramplan.planner.catalog import gpu_for_device_name

    from .environment import environment
    from .fit import fit_corrections, held_out_worst_pct
    from .resume import latest_per_config, measured_keys, planned_key
    from .runner import measure_and_store, model_for

    env = environment("cpu" if device == "trace" else device)
    if device == "trace":
        from .fake_trace import SDPA_DISPATCH

        env["device_name"] = "fake-cuda-trace"
        env["sdpa_dispatch"] = SDPA_DISPATCH
    gpu = gpu_for_device_name(env["device_name"]) if device == "cuda" else None
    counts, skipped = {"ok": 0, "oom": 0, "error": 0}, 0
    with Store.open(db) as store:
        done = set() if redo else measured_keys(store.runs(source=device, device_name=env["device_name"]))
        for model_name, run in matrix:
            if done and planned_key(device, env, model_name, model_for(model_name)[0], run) in done:
                skipped += 1
                if on_skip is not None:
                    on_skip(model_name, run)
                continue
            if before is not None:
                before(model_name, run)
            record = measure_and_store(store, model_name, run, device, env, gpu, steps, command)
            counts[record.outcome] += 1
            if after is not None:
                after(record)
        records = latest_per_config([r for r in store.runs(source=device, device_name=env["device_name"]) if r.stack == env["stack"]])
        corrections = replace(fit_corrections(records, f"{env['device_name']} / {env['stack']}"), held_out_worst_pct=held_out_worst_pct(records))
        store.add_calibration(
            env["device_name"], env["stack"], corrections.__dict__, [r.id for r in records if r.outcome == "ok"],
            {"runs": len(records)}, gpu_key=gpu.key if gpu else None,
        )
    return MatrixResult(len(matrix) - skipped, counts, corrections, env["device_name"], Path(store.path), skipped)


# ---------------------------------------------------------------- the error table
@dataclass(frozen=True)
class ErrorReport:
    rows: list[dict]  # one per stored run (calibrate.report.error_rows)
    excluded: dict[str, int]  # outcome -> runs left out of the error statistics (oom, error)

    @property
    def summary(self):
        from .report import summarize

        return summarize(self.rows)


def error_report(db=None, current: bool = False, allow_empty: bool = False) -> ErrorReport:
    """Estimate vs measurement for every stored run; `current` re-estimates each with this version's model.

    Raises:
        ConfigError: the store holds no runs (unless `allow_empty`).
    """
    from .report import error_rows

    from .resume import duplicates

    with Store.open(db) as store:
        records = store.runs()
    rows = error_rows(records, current=current)  # one row per config: a config measured twice counts once
    if not rows and not allow_empty:
        raise ConfigError(f"the store {db or 'at the default path'} holds no runs yet: run `vramplan calibrate` first")
    excluded: dict[str, int] = {}
    for row in rows:
        if row["outcome"] != "ok":
            excluded[row["outcome"]] = excluded.get(row["outcome"], 0) + 1
    if duplicates(records):
        excluded["repeated measurements of a config (the latest counts)"] = duplicates(records)
    return ErrorReport(rows, excluded)


# ---------------------------------------------------------------- one full-size trace
def trace(model: str, run: RunConfig, vlm=None) -> dict:
    """Trace one config at full size on fake tensors, beside its estimate (the `calibrate --trace` document).

    `vlm` (a `VlmRun`: stage, images, strategies) is for a vision-language model only; None: stage 2
    with one image of the family's default size.

    Raises:
        UnknownModelError: `model` does not resolve.
        ConfigError: `vlm` given for a text model.
    """
    from vramplan.planner.catalog import resolve_model
    from vramplan.planner.estimator import estimate
    from vramplan.planner.vision import is_vlm_config

    from .runner import measure

    resolved = resolve_model(model)
    if is_vlm_config(resolved.config):  # vision tower + projector + LLM
        from .vlm_trace import trace_document

        return trace_document(resolved, run, vlm)
    if vlm is not None:
        from vramplan.planner.errors import ConfigError

        raise ConfigError(f"--stage and the image flags are for vision-language models; {resolved.spec.name} is a text model")
    predicted = estimate(resolved.spec, run).breakdown  # device_kind cuda: the trace imitates the GPU's code paths
    return trace_summary(resolved, run, predicted, measure("trace", resolved.config, run, steps=2))


def trace_summary(resolved, run: RunConfig, predicted, result: dict) -> dict:
    """`calibrate --trace`'s document: the estimate's tensor peak against the traced steady peak."""
    from .runner import tensor_peak_estimate

    estimated = tensor_peak_estimate(predicted)
    measured = result["steady_peak_bytes"]
    return {
        "model": resolved.spec.name,
        "method": run.method,
        "statistic": TRACE_STATISTIC,
        "measured_bytes": measured,
        "estimated_bytes": estimated,
        "error_pct": 100.0 * (estimated - measured) / measured,
        "components": predicted.at_peak(),
        "traced_categories": result.get("breakdown", {}),
        "traced_phase_peak_bytes": result.get("phase_peak_bytes", {}),
        "seconds": result.get("seconds"),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in run.__dict__.items()},
    }
