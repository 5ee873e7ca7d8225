"""Measure one config and store it beside the estimate made before the run."""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict

from vramplan.planner.architectures import spec_from_config
from vramplan.planner.breakdown import MemoryBreakdown
from vramplan.planner.catalog import resolve_model
from vramplan.planner.estimator import estimate
from vramplan.planner.specs import GpuSpec, ModelSpec, RunConfig

from .probe_models import PROBE_MODELS
from .store import RunRecord, Store


def model_for(name: str) -> tuple[dict, ModelSpec]:
    """A probe config or anything `--model` accepts, as (config.json dict, spec)."""
    if name in PROBE_MODELS:
        config = PROBE_MODELS[name]
        return config, spec_from_config(config, name, source="probe")
    from .vlm_build import VLM_PROBE_MODELS

    if name in VLM_PROBE_MODELS:  # a tiny VLM: its decoder with the vision tower and projector as components
        from vramplan.planner.vision import vlm_spec_from_config

        config = VLM_PROBE_MODELS[name]
        return config, vlm_spec_from_config(config, name, source="probe").model
    resolved = resolve_model(name)
    return resolved.config, resolved.spec


def is_oom(exc: BaseException) -> bool:
    """An allocation failure, on a GPU (torch.OutOfMemoryError) or in host memory."""
    import torch

    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()


def tensor_peak_estimate(breakdown: MemoryBreakdown) -> int:
    """The estimate a tracer or a trace can check: peak allocated less the cuBLAS workspace, which is no tensor."""
    return breakdown.peak_allocated_bytes - breakdown.by_name().get("overhead/cublas_workspace", 0)


def measure(source: str, config: dict, run: RunConfig, steps: int) -> dict:
    if source == "cuda":
        from .cuda_probe import measure_cuda

        return measure_cuda(config, run, steps=steps)
    if source == "trace":
        from .fake_trace import trace_step

        return trace_step(config, run)
    from .cpu_probe import measure_cpu

    return measure_cpu(config, run, steps=steps)


def measure_and_store(
    store: Store,
    model_name: str,
    run: RunConfig,
    source: str,
    environment: dict,
    gpu: GpuSpec | None = None,
    steps: int = 3,
    command: str | None = None,
) -> RunRecord:
    """Estimate, then measure, then store one run; an OOM or a failure is stored too."""
    if hasattr(run, "vlm"):  # a VLM case (calibrate.vlm_runner): the images and the stage travel with it
        from .vlm_runner import measure_and_store_vlm

        return measure_and_store_vlm(store, model_name, run, source, environment, steps, command)
    config, spec = model_for(model_name)
    predicted = estimate(spec, run, gpu).breakdown
    allocated = tensor_peak_estimate(predicted) if source == "trace" else predicted.peak_allocated_bytes
    started = time.perf_counter()
    outcome, error, result = "ok", None, {}
    try:
        result = measure(source, config, run, steps)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # any failure is a data point with its message, never a lost run
        outcome = "oom" if is_oom(exc) else "error"
        error = f"{type(exc).__name__}: {exc}"[:2000]
        if outcome == "error":
            error += "\n" + "".join(traceback.format_exception_only(type(exc), exc))[-500:]
    if source == "cuda":
        import torch

        torch.cuda.empty_cache()
    record = RunRecord(
        source=source,
        outcome=outcome,
        error_message=error,
        model_name=model_name,
        model_config=config,
        run_config=asdict(run),
        device_name=environment["device_name"],
        device_total_bytes=environment.get("device_total_bytes"),
        stack=environment["stack"],
        environment=environment,
        estimate={"terms": predicted.by_name(), "at_peak": predicted.at_peak(), "peak_phase": predicted.peak_phase},
        est_peak_allocated_bytes=allocated,
        est_peak_reserved_bytes=predicted.peak_reserved_bytes,
        est_device_used_bytes=predicted.device_used_bytes,
        peak_allocated_bytes=result.get("steady_peak_bytes"),
        peak_reserved_bytes=result.get("steady_reserved_bytes"),
        device_used_bytes=result.get("device_used_bytes"),
        phases=result.get("steady_phase_peak_bytes", {}),
        categories=result.get("steady_breakdown", {}),
        command=command,
        duration_s=time.perf_counter() - started,
    )
    record_id = store.add_run(record)
    return RunRecord(**{**record.__dict__, "id": record_id})


def run_config_from_dict(values: dict) -> RunConfig:
    values = dict(values)
    values["targets"] = tuple(values.get("targets", ()))
    return RunConfig(**values)
