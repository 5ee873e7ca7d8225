"""CUDA's SDPA dispatch (planner/sdpa_dispatch.py) and the leftover of earlier 4-bit models.

The rule: fp32 q/k/v with grouped kv heads and no mask run the math kernel on CUDA, which keeps
the probabilities. Checked here against real CPU steps with the math kernel forced (the kernel's
saved tensors do not depend on the device), and against the fake-tensor trace that emulates it.
"""

import gc
import warnings
import weakref
from dataclasses import replace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from vramplan.calibrate.cpu_probe import measure_cpu
from vramplan.calibrate.fake_trace import SDPA_DISPATCH, trace_step
from vramplan.calibrate.fit import as_measured
from vramplan.calibrate.model_build import build_model
from vramplan.calibrate.runner import model_for, tensor_peak_estimate
from vramplan.calibrate.store import RunRecord
from vramplan.planner.activations import layer_activations
from vramplan.planner.dtypes import dtype_plan
from vramplan.planner.estimator import estimate
from vramplan.planner.specs import RunConfig
from vramplan.planner.targets import resolve_targets

QLORA = RunConfig(method="qlora", batch=2, seq_len=256, grad_ckpt=False, targets=("all-linear",))


def _layer(model, run):
    return layer_activations(model, run, dtype_plan(run), resolve_targets(model, run.targets))


@pytest.mark.parametrize("change, math", [
    ({}, True),  # 4-bit base, fp32 stream, grouped kv heads, no mask, CUDA
    ({"method": "lora"}, False),  # 16-bit q/k/v: flash
    ({"method": "full", "precision": "fp32"}, True),  # fp32 run
    ({"device_kind": "cpu"}, False),  # the CPU's fused kernel takes fp32 and grouped heads
    ({"packing": True}, False),  # a mask: transformers repeats k/v itself, the memory-efficient kernel takes fp32
    ({"kbit_upcast": False}, False),  # a 16-bit stream over the 4-bit base: flash
    ({"transformers_version": "4.53.0"}, False),  # k/v repeated before SDPA: no grouped heads reach it
    ({"cuda_math_sdpa": False}, False),  # a trace made before the emulation
])
def test_which_runs_fall_back_to_the_math_kernel(change, math):
    _, model = model_for("probe-llama")  # 8 heads, 4 kv heads
    run = replace(QLORA, **change)
    layer = _layer(model, run)
    probabilities = 4 * run.batch * model.num_heads * run.seq_len ** 2
    assert layer.attention_scores == (probabilities if math else 0)


def test_multi_head_attention_keeps_the_fused_kernel():
    _, model = model_for("probe-phi3")  # 8 heads, 8 kv heads
    assert _layer(model, QLORA).attention_scores == 0


def test_the_math_kernel_saves_what_the_rule_says_on_real_steps():
    """CPU steps of the QLoRA probe, fused vs math kernel forced: the difference is the rule's, to the byte."""
    config, model = model_for("probe-llama")
    run = replace(QLORA, device_kind="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fused = measure_cpu(config, run)["steady_peak_bytes"]
        with sdpa_kernel([SDPBackend.MATH]):
            math = measure_cpu(config, run)["steady_peak_bytes"]
    cuda = replace(QLORA, device_kind="cuda")
    per_layer = _layer(model, cuda).total - _layer(model, replace(cuda, cuda_math_sdpa=False)).total
    assert math - fused == model.num_layers * per_layer


def test_the_trace_emulates_the_dispatch_and_the_estimate_follows_it():
    config, model = model_for("probe-llama")
    run = replace(QLORA, device_kind="cuda")
    traced = trace_step(config, run)["steady_peak_bytes"]
    assert tensor_peak_estimate(estimate(model, run).breakdown) == pytest.approx(traced, rel=0.01)
    fused = tensor_peak_estimate(estimate(model, replace(run, cuda_math_sdpa=False)).breakdown)
    assert traced - fused > model.num_layers * 4 * run.batch * model.num_heads * run.seq_len ** 2 * 0.9


@pytest.mark.parametrize("ckpt", [True, False])
def test_where_attention_dominates_the_math_kernels_moments_set_the_peak(ckpt):
    """Seq 1024 on the probe: the probabilities (67 MB a layer) outweigh the logits (34 MB); the peak is
    one layer's softmax in forward or its attention backward (scores' and probabilities' gradients)."""
    config, model = model_for("probe-llama")
    run = replace(QLORA, seq_len=1024, grad_ckpt=ckpt, device_kind="cuda")
    traced = trace_step(config, run)["steady_peak_bytes"]
    assert tensor_peak_estimate(estimate(model, run).breakdown) == pytest.approx(traced, rel=0.02)


def test_old_traces_are_re_estimated_with_the_fused_kernel():
    def record(environment):
        return RunRecord(source="trace", outcome="ok", model_name="probe-llama", model_config={}, run_config={},
                         device_name="fake-cuda-trace", stack="", environment=environment, estimate={}, est_peak_allocated_bytes=1)

    assert as_measured(record({}), QLORA).cuda_math_sdpa is False
    assert as_measured(record({"sdpa_dispatch": SDPA_DISPATCH}), QLORA).cuda_math_sdpa is True


def test_a_4bit_model_outlives_del_until_the_cyclic_collector():
    """Why the CUDA probe and the trainer collect before building (calibrate/cuda_leftovers.py)."""
    config, _ = model_for("probe-llama")
    alive = {}
    for method in ("lora", "qlora"):
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_model(config, RunConfig(method=method, device_kind="cpu", seq_len=128))
        refs = [weakref.ref(p) for p in model.parameters()]
        del model
        alive[method] = sum(ref() is not None for ref in refs)
        gc.collect()
        assert all(ref() is None for ref in refs)
    assert alive["lora"] == 0
    assert alive["qlora"] == 7 * 4  # each decoder layer's seven 4-bit weights, until gc.collect()
    assert torch.is_grad_enabled()
