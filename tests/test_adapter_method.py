"""Adapter tuning (Houlsby / Pfeiffer bottlenecks, and on a 4-bit base): counts, memory, build, save/reload."""

import json
import warnings

import pytest
import torch
from click.testing import CliRunner

from vramplan.calibrate.adapters import bottleneck
from vramplan.calibrate.model_build import build_model
from vramplan.calibrate.probe_models import PROBE_MODELS
from vramplan.cli import cli
from vramplan.planner.architectures import spec_from_config
from vramplan.planner.catalog import resolve_model
from vramplan.planner.errors import ConfigError
from vramplan.planner.estimator import estimate
from vramplan.planner.specs import RunConfig

# Llama-3-8B at m = 4096 / 16 = 256: 2 adapters x 32 layers x (2*4096*256 + 4096 + 256)
HOULSBY_8B = 2 * 32 * (2 * 4096 * 256 + 4096 + 256)


def run_cli(*args):
    return CliRunner().invoke(cli, [*map(str, args)])


def test_trainable_params_of_the_issue():
    assert HOULSBY_8B == 134_496_256
    result = run_cli("estimate", "--model", "llama-3-8b", "--method", "adapter,adapter-pfeiffer,qadapter", "--json")
    assert result.exit_code == 0, result.output
    by_method = {e["method"]: e for e in json.loads(result.output)["estimates"]}
    assert by_method["adapter"]["trainable_params"] == HOULSBY_8B
    assert by_method["adapter-pfeiffer"]["trainable_params"] == HOULSBY_8B // 2
    assert by_method["qadapter"]["trainable_params"] == HOULSBY_8B
    assert by_method["adapter"]["config"]["method_options"] == {"adapter_size": 256, "adapter_act": "relu"}
    assert by_method["adapter"]["config"]["rank"] is None  # no rank: the JSON says so rather than a LoRA default


@pytest.mark.parametrize("method", ["adapter", "adapter-pfeiffer", "qadapter"])
def test_count_matches_the_real_module_on_meta(method):
    """The module the trainer inserts, built on the meta device at full size, has the planner's count."""
    resolved = resolve_model("llama-3-8b")
    run = RunConfig(method=method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(resolved.config, run, meta=True)
    trainable = {name: p.numel() for name, p in model.named_parameters() if p.requires_grad}
    assert all(".bottleneck." in name for name in trainable)  # layer norms and the base stay frozen
    assert sum(trainable.values()) == estimate(resolved.spec, run).trainable_params


def test_adapter_size_and_activation_flags():
    result = run_cli("estimate", "--model", "llama-3-8b", "--method", "adapter", "--adapter-size", "64", "--adapter-act", "gelu", "--json")
    config = json.loads(result.output)["estimates"][0]["config"]
    assert config["method_options"] == {"adapter_size": 64, "adapter_act": "gelu"}
    assert json.loads(result.output)["estimates"][0]["trainable_params"] == 2 * 32 * (2 * 4096 * 64 + 4096 + 64)


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--adapter-size", "0"], "Error: --adapter-size must be a whole number greater than 0, got 0"),
        (["--adapter-act", "tanh"], "Error: Invalid value for '--adapter-act'"),
    ],
)
def test_bad_adapter_flags(args, expected):
    result = run_cli("estimate", "--model", "llama-3-8b", "--method", "adapter", *args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.startswith("Error:")][-1].startswith(expected)


def test_gelu_saves_the_hidden_activation_twice():
    spec = resolve_model("llama-3-8b").spec
    relu = estimate(spec, RunConfig(method="adapter", grad_ckpt=False))
    gelu = estimate(spec, RunConfig(method="adapter", grad_ckpt=False, method_options={"adapter_act": "gelu"}))
    tokens, m, adapters = 2048, 256, 2
    # 32 layers, layer 0 included (its adapters sit after its frozen attention), bf16... adapters in fp32
    extra = gelu.breakdown.by_name()["activations/layers"] - relu.breakdown.by_name()["activations/layers"]
    assert extra == 32 * adapters * 4 * tokens * m


@pytest.mark.slow
@pytest.mark.parametrize("kw", [dict(method="adapter"), dict(method="adapter-pfeiffer", grad_ckpt=True), dict(method="qadapter")])
def test_cpu_measured_peak_matches(kw):
    from vramplan.calibrate.cpu_probe import measure_cpu

    config = PROBE_MODELS["probe-llama"]
    run = RunConfig(**{**dict(batch=1, seq_len=192, device_kind="cpu", grad_ckpt=False), **kw})
    measured = measure_cpu(config, run, steps=2)["steady_peak_bytes"]
    estimated = estimate(spec_from_config(config, "probe-llama"), run).breakdown.peak_allocated_bytes
    assert abs(estimated - measured) / measured <= 0.02


def test_save_and_reload_gives_the_same_outputs(tmp_path):
    config = PROBE_MODELS["probe-llama"]
    run = RunConfig(method="adapter", device_kind="cpu", precision="fp32", dropout=0.0)
    torch.manual_seed(0)
    model = build_model(config, run)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.02)  # up starts at zero: give the adapters something to carry
    model.eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    expected = model(ids).logits
    bottleneck.save(model, tmp_path, base_path="probe")
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["placements"] == ["o_proj", "down_proj"] and saved["adapter_size"] == 16

    from transformers import AutoConfig, AutoModelForCausalLM

    base = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.float32)
    base.load_state_dict({k: v for k, v in model.state_dict().items() if ".bottleneck." not in k})
    base.eval()
    plain = base(ids).logits
    reloaded = bottleneck.from_pretrained(base, tmp_path)
    assert torch.allclose(reloaded(ids).logits, expected, atol=1e-6)
    assert not torch.allclose(plain, expected)
    with pytest.raises(ConfigError, match="cannot be merged"):
        bottleneck.merge(base, tmp_path)
