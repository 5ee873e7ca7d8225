"""Ground-truth measurement machinery (calibrate/) on a tiny random Llama: fast, CPU only."""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
bnb = pytest.importorskip("bitsandbytes")

ROOT = Path(__file__).resolve().parents[1]


def _import_calibrate():
    """`vramplan.calibrate` once the package is installed; from this checkout until then."""
    try:
        return importlib.import_module("vramplan.calibrate.cpu_probe")
    except ImportError:
        pass
    pkg = sys.modules.get("vramplan")
    if pkg is None:
        pkg = types.ModuleType("vramplan")
        pkg.__path__ = []
        sys.modules["vramplan"] = pkg
    if str(ROOT) not in list(pkg.__path__):
        pkg.__path__.append(str(ROOT))  # vramplan.planner -> ROOT/planner, vramplan.calibrate -> ROOT/calibrate
    return importlib.import_module("vramplan.calibrate.cpu_probe")


cpu_probe = _import_calibrate()
from vramplan.calibrate.cpu_tracker import LiveTensorTracker  # noqa: E402
from vramplan.calibrate.model_build import build_model, resolve_target_modules  # noqa: E402
from vramplan.planner.specs import RunConfig  # noqa: E402

TINY = dict(
    model_type="llama",
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    vocab_size=256,
)
SEQ = 16


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _unique_storage_bytes(tensors) -> int:
    """Independent of the tracker: numel * element_size once per distinct storage."""
    seen = {}
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.device)
        seen[key] = max(seen.get(key, 0), t.numel() * t.element_size())
    return sum(seen.values())


@pytest.mark.parametrize("method", ["full", "lora", "dora", "qlora", "qdora"])
def test_every_method_measures_a_positive_peak(method):
    run = RunConfig(method=method, seq_len=SEQ, rank=4, grad_ckpt=method.startswith("q"))
    r = cpu_probe.measure_cpu(TINY, run, steps=2)
    assert r["peak_bytes"] > 0
    assert r["train_peak_bytes"] > r["param_bytes"] > 0
    assert r["steady_peak_bytes"] > 0
    assert set(r["phase_peak_bytes"]) >= {"load", "forward", "backward", "optimizer"}
    assert all(r["phase_peak_bytes"][p] > 0 for p in ("load", "forward", "backward", "optimizer"))
    assert sum(r["breakdown"].values()) == r["train_peak_bytes"]  # the breakdown adds up exactly
    assert r["tracked_param_bytes"] == r["param_bytes"]
    assert r["grad_bytes"] == r["trainable_param_bytes"] > 0
    assert all(loss == loss for loss in r["losses"])  # no NaN
    if method != "full":
        assert r["trainable_param_bytes"] < r["param_bytes"]


@pytest.mark.parametrize("method,tie", [("full", False), ("full", True), ("qlora", False)])
def test_tracker_param_bytes_equal_model_parameter_bytes(method, tie):
    run = RunConfig(method=method, seq_len=SEQ, rank=4)
    tracker = LiveTensorTracker()
    with tracker:
        with tracker.phase("load", step=-1):
            model = build_model({**TINY, "tie_word_embeddings": tie}, run)
        tracker.track_module(model, grad_hooks=False)
    params = list(model.parameters())
    expected = _unique_storage_bytes(params)
    assert tracker.totals["params"] == expected
    if tie:  # the tied lm_head shares the embedding storage: counted once
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    if method == "qlora":
        assert tracker.totals["quant_state"] > 0


def test_qlora_weights_are_uint8_params4bit():
    model = build_model(TINY, RunConfig(method="qlora", seq_len=SEQ, rank=4))
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 7 * TINY["num_hidden_layers"]
    for m in quantized:
        w = m.weight
        assert isinstance(w, bnb.nn.Params4bit) and w.dtype == torch.uint8 and w.bnb_quantized
        assert w.numel() == m.in_features * m.out_features // 2  # two NF4 codes per byte
        assert w.quant_state is not None and w.quant_state.quant_type == "nf4"
        assert w.quant_state.nested  # double_quant defaults to True
    lm_head = model.get_output_embeddings()
    assert type(lm_head) is torch.nn.Linear  # lm_head stays unquantized
    assert lm_head.weight.dtype == torch.float32  # prepare_model_for_kbit_training upcast it


def test_full_step_peak_covers_params_grads_and_adam_states():
    run = RunConfig(method="full", seq_len=SEQ, grad_ckpt=False, optimizer="adamw")
    r = cpu_probe.measure_cpu(TINY, run, steps=2)
    model = build_model(TINY, run)
    p = _unique_storage_bytes(list(model.parameters()))
    assert r["param_bytes"] == p
    # bf16 params, bf16 grads, exp_avg + exp_avg_sq in the param dtype
    assert r["train_peak_bytes"] >= 4 * p
    assert r["steady_peak_bytes"] >= 4 * p
    assert r["optimizer_state_bytes"] >= 2 * p
    bd = r["breakdown"]
    assert bd["params"] == p and bd["optimizer"] >= 2 * p


def test_tracker_counts_views_once_and_frees():
    tracker = LiveTensorTracker()
    with tracker:
        with tracker.phase("forward"):
            a = torch.empty(1000, dtype=torch.float32)
            views = [a[10:], a.view(10, 100), a.t() if a.dim() == 2 else a[::2]]
            assert tracker.current_bytes == 4000
            b = torch.empty(500, dtype=torch.bfloat16)
            assert tracker.current_bytes == 5000
            del b
            assert tracker.current_bytes == 4000
    rec = tracker.records[-1]
    assert rec.peak_bytes == 5000
    assert rec.breakdown["temporaries"] == 1000 and rec.breakdown["activations"] == 4000
    del views, a
    assert tracker.current_bytes == 0


def test_tracker_counts_params4bit_and_quant_state():
    layer = bnb.nn.Linear4bit(64, 128, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
    tracker = LiveTensorTracker()
    with tracker:
        w = bnb.nn.Params4bit(torch.randn(128, 64, dtype=torch.bfloat16), requires_grad=False, quant_type="nf4")
        layer.weight = w.to("cpu")
        tracker.track_module(layer, grad_hooks=False)
    assert layer.weight.dtype == torch.uint8
    assert tracker.totals["params"] == 64 * 128 // 2
    qs = layer.weight.quant_state
    expected_qs = _unique_storage_bytes([t for t in (qs.absmax, qs.code, qs.offset, qs.state2.absmax, qs.state2.code)])
    assert tracker.totals["quant_state"] == expected_qs


def test_targets_resolve_presets_and_short_names():
    model = build_model(TINY, RunConfig(method="full", seq_len=SEQ))
    assert resolve_target_modules(model, ("all-linear",)) == "all-linear"
    assert resolve_target_modules(model, ("attention",)) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert resolve_target_modules(model, ("mlp",)) == ["gate_proj", "up_proj", "down_proj"]
    assert resolve_target_modules(model, ("q", "v")) == ["q_proj", "v_proj"]
    with pytest.raises(ValueError):
        resolve_target_modules(model, ("nonexistent",))


@pytest.mark.parametrize("method", ["lora", "qdora"])
def test_fake_trace_matches_the_real_cpu_measurement(method):
    fake_trace = importlib.import_module("vramplan.calibrate.fake_trace")
    run = RunConfig(method=method, seq_len=SEQ, rank=4, grad_ckpt=True, device_kind="cpu")
    real = cpu_probe.measure_cpu(TINY, run, steps=2)
    fake = fake_trace.trace_step(TINY, run, steps=2)
    assert set(fake) == set(real)
    assert fake["mode"] == "fake" and fake["losses"] == [None, None]
    for key in (
        "train_peak_bytes",
        "steady_peak_bytes",
        "steady_phase_peak_bytes",
        "breakdown",
        "param_bytes",
        "grad_bytes",
        "optimizer_state_bytes",
        "quant_state_bytes",
    ):
        assert fake[key] == real[key], key


def test_fake_trace_cuda_emulation_rounds_blocks_and_saves_bool_dropout_masks():
    fake_trace = importlib.import_module("vramplan.calibrate.fake_trace")
    base = dict(method="lora", seq_len=SEQ, rank=4, grad_ckpt=False, dropout=0.1)
    cuda = fake_trace.trace_step(TINY, RunConfig(**base, device_kind="cuda"), steps=1)
    assert cuda["round_to"] == 512 and cuda["train_peak_bytes"] % 512 == 0 and cuda["notes"]

    def saved(r):
        fwd = next(rec for rec in r["records"] if rec["phase"] == "forward")
        return fwd["breakdown"]["activations"]

    cpu = fake_trace.trace_step(TINY, RunConfig(**base, device_kind="cpu"), steps=1)
    cuda_exact = fake_trace.trace_step(TINY, RunConfig(**base, device_kind="cuda"), steps=1, round_to=1)
    # One dropout per adapted Linear, on its fp32 input: CPU keeps a fp32 mask (4 B/element),
    # CUDA's fused kernel a bool one (1 B/element). q k v o gate up see hidden-sized inputs, down
    # an intermediate-sized one; without checkpointing nothing makes the embeddings require grad,
    # so layer 0's q/k/v masks are not saved at all.
    h, i, n = TINY["hidden_size"], TINY["intermediate_size"], TINY["num_hidden_layers"]
    masked = SEQ * ((6 * h + i) * n - 3 * h)
    assert saved(cpu) - saved(cuda_exact) == 3 * masked
