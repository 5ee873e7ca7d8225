"""The installed stack: transformers versions -> memory paths, the flag, the header and JSON fields."""

import json
from dataclasses import replace
from importlib import metadata

import pytest
from click.testing import CliRunner

from vramplan.calibrate.runner import model_for
from vramplan.cli import cli
from vramplan.planner import stack
from vramplan.planner.activations import layer_activations, logits_bytes
from vramplan.planner.dtypes import dtype_plan
from vramplan.planner.errors import ConfigError
from vramplan.planner.estimator import estimate
from vramplan.planner.specs import RunConfig
from vramplan.planner.stack import MODEL_UPCAST, PADDED_LABELS, SHIFT_COPY, Stack, parse_version, stack_for


@pytest.mark.parametrize("text, expected", [
    ("4.45.2", (4, 45)), ("4.46.0.dev0", (4, 46)), ("5.0.0rc1", (5, 0)), ("5.24", (5, 24)), (" 4.49.0 ", (4, 49)),
    ("4.x", None), ("five", None), ("5", None), ("", None),
])
def test_parse_version(text, expected):
    assert parse_version(text) == expected


@pytest.mark.parametrize("version, path, gqa", [
    ("4.30.0", MODEL_UPCAST, False), ("4.45.2", MODEL_UPCAST, False),
    ("4.46.0", SHIFT_COPY, False), ("4.48.3", SHIFT_COPY, False),
    ("4.49.0", PADDED_LABELS, False), ("4.53.3", PADDED_LABELS, False),
    ("4.54.0", PADDED_LABELS, True), ("5.24.0", PADDED_LABELS, True),
])
def test_rules_per_version(version, path, gqa):
    modelled = stack_for(version)
    assert (modelled.loss_path, modelled.sdpa_enable_gqa, modelled.source) == (path, gqa, "flag")


@pytest.mark.parametrize("version, message", [
    ("4.x", "--transformers-version must look like 4.45.2 or 5.0, got '4.x'"),
    ("3.9.0", "--transformers-version 3.9.0 is outside the modelled range 4.0 to 5.x"),
    ("6.0.0", "--transformers-version 6.0.0 is outside the modelled range 4.0 to 5.x"),
])
def test_bad_version_is_a_config_error(version, message):
    with pytest.raises(ConfigError, match="^" + message.replace(".", r"\.").replace("(", r"\(") + "$"):
        RunConfig(transformers_version=version)


def test_without_transformers_the_built_for_version(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert stack.installed_stack.__wrapped__() == Stack(stack.BUILT_FOR, "default")


def test_installed_version_is_the_default():
    assert stack_for(None) == Stack(metadata.version("transformers"), "installed")


def _probe(name="probe-llama2", **changes):
    run = RunConfig(method="lora", precision="bf16", grad_ckpt=False, batch=2, seq_len=256, device_kind="cpu", **changes)
    return model_for(name)[1], run


def test_loss_bytes_per_path():
    # bf16 head output; t = 2 x 256 tokens, t' = 2 x 255 shifted positions (measured: planner/stack.py)
    model, run = _probe()
    dt = dtype_plan(run)
    tv, shifted = 512 * model.vocab_size, 510 * model.vocab_size
    new = logits_bytes(model, replace(run, transformers_version="4.49.0"), dt)
    loss_copy = logits_bytes(model, replace(run, transformers_version="4.46.0"), dt)
    model_cast = logits_bytes(model, replace(run, transformers_version="4.45.2"), dt)
    assert new == max(2 * tv + 4 * tv + 4 * tv, 3 * 4 * tv)  # backward's three fp32 [t, V] tensors
    assert loss_copy == 2 * tv + 4 * tv + 2 * 4 * shifted  # head output, upcast, shifted copy, log_softmax
    assert model_cast == 4 * tv + 2 * 4 * shifted  # the 16-bit head output died at the cast
    fp32 = replace(run, precision="fp32")  # an fp32 head: the upcast is a no-op, 4.45 and 4.46 agree (measured)
    dt32 = dtype_plan(fp32)
    assert {logits_bytes(model, replace(fp32, transformers_version=v), dt32) for v in ("4.45.2", "4.46.0")} == {4 * tv + 2 * 4 * shifted}


def test_installed_5x_estimate_is_unchanged():
    model, run = _probe("probe-llama")
    installed = estimate(model, run).breakdown
    flagged = estimate(model, replace(run, transformers_version="5.24.0")).breakdown
    assert installed.by_name() == flagged.by_name()
    assert installed.peak_allocated_bytes == flagged.peak_allocated_bytes


def test_sdpa_repeats_kv_before_4_54():
    model, run = _probe("probe-llama")  # 8 heads, 4 kv heads of 32
    assert model.num_kv_heads < model.num_heads
    dt = dtype_plan(run)
    old = layer_activations(model, replace(run, transformers_version="4.53.3"), dt, ())
    new = layer_activations(model, replace(run, transformers_version="4.54.0"), dt, ())
    q_dim, kv_dim = model.num_heads * model.head_dim, model.num_kv_heads * model.head_dim
    assert old.attention - new.attention == 2 * 2 * run.tokens * (q_dim - kv_dim)
    mha, run = _probe("probe-llama2")  # kv heads = heads: nothing to repeat
    assert layer_activations(mha, replace(run, transformers_version="4.45.2"), dt, ()).attention == layer_activations(mha, run, dt, ()).attention


def _estimate(*args):
    return CliRunner().invoke(cli, ["estimate", "--model", "8b", "--method", "lora", *args])


def test_header_says_which_version():
    flagged = _estimate("--transformers-version", "4.45.2")
    assert flagged.exit_code == 0, flagged.output
    assert "modelled for transformers 4.45.2 (--transformers-version) · loss: model-upcast" in flagged.output
    installed = _estimate()
    assert f"modelled for transformers {metadata.version('transformers')} (installed) · loss: padded-labels" in installed.output


def test_json_stack_field():
    result = _estimate("--transformers-version", "4.46.1", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["stack"] == {"transformers": "4.46.1", "source": "flag", "loss_path": "shift-copy", "sdpa_enable_gqa": False}
    installed = json.loads(_estimate("--json").output)
    assert installed["stack"]["source"] == "installed"
    # the shifted copy makes the 4.46 loss term larger than the installed 5.x one (LoRA, bf16 head output, seq 2048, vocab 128,256)
    tv, shifted = 2048 * 128256, 2047 * 128256
    flagged_loss = document["estimates"][0]["components_all_phases"]["activations/logits"]
    installed_loss = installed["estimates"][0]["components_all_phases"]["activations/logits"]
    assert flagged_loss - installed_loss == (2 + 4) * tv + 8 * shifted - 12 * tv


def test_bad_version_on_the_command_line():
    result = _estimate("--transformers-version", "4.x")
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if line.startswith("Error:")] == [
        "Error: --transformers-version must look like 4.45.2 or 5.0, got '4.x'"
    ]


@pytest.mark.parametrize("libraries, expected", [
    ({"transformers": "4.46.0"}, "4.46.0"), ({"transformers": "missing"}, None), ({}, None),
])
def test_stored_runs_are_modelled_for_their_stack(libraries, expected):
    from types import SimpleNamespace

    from vramplan.calibrate.fit import run_of

    record = SimpleNamespace(run_config={"method": "lora", "targets": ["all-linear"]}, environment={"libraries": libraries})
    assert run_of(record).transformers_version == expected


def test_vlm_header_and_json_say_which_version():
    args = ["estimate", "--model", "qwen2-vl-7b", "--transformers-version", "4.46.0"]
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0, table.output
    assert "modelled for transformers 4.46.0 (--transformers-version) · loss: shift-copy" in table.output
    document = json.loads(CliRunner().invoke(cli, [*args, "--json"]).output)
    assert document["stack"] == {"transformers": "4.46.0", "source": "flag", "loss_path": "shift-copy", "sdpa_enable_gqa": False}


def test_recommend_plans_for_the_given_version_and_its_plan_keeps_it(tmp_path):
    plan = tmp_path / "plan.yaml"
    args = ["recommend", "--model", "8b", "--gpu", "t4", "--dataset-size", "5000", "--transformers-version", "4.45.2"]
    table = CliRunner().invoke(cli, [*args, "--out", str(plan)])
    assert table.exit_code == 0, table.output
    assert "modelled for transformers 4.45.2 (--transformers-version) · loss: model-upcast" in table.output
    document = json.loads(CliRunner().invoke(cli, [*args, "--json"]).output)
    assert document["stack"] == {"transformers": "4.45.2", "source": "flag", "loss_path": "model-upcast", "sdpa_enable_gqa": False}
    installed = json.loads(CliRunner().invoke(cli, [*args[:-2], "--json"]).output)
    assert installed["stack"]["source"] == "installed"
    # the plan carries the version: `estimate --plan` models the same paths, and the recommended peak again
    again = json.loads(CliRunner().invoke(cli, ["estimate", "--plan", str(plan), "--json"]).output)
    assert again["stack"]["transformers"] == "4.45.2"
    assert again["estimates"][0]["peak_allocated_bytes"] == document["recommendations"][0]["peak_allocated_bytes"]


def test_recommend_and_report_refuse_a_bad_version_in_one_line(tmp_path):
    for args in (["recommend", "--model", "8b", "--gpu", "t4"], ["report", "--model", "8b", "--gpu", "t4", "--out", str(tmp_path / "r.html")]):
        result = CliRunner().invoke(cli, [*args, "--transformers-version", "4.x"])
        assert result.exit_code == 1
        assert [line for line in result.output.splitlines() if line.startswith("Error:")] == [
            "Error: --transformers-version must look like 4.45.2 or 5.0, got '4.x'"
        ]
    assert not (tmp_path / "r.html").exists()


def test_report_and_vlm_recommend_say_which_version(tmp_path):
    page = tmp_path / "r.html"
    result = CliRunner().invoke(cli, ["report", "--model", "8b", "--gpu", "t4", "--method", "lora", "--transformers-version", "4.46.0", "--out", str(page)])
    assert result.exit_code == 0, result.output
    assert "modelled for transformers 4.46.0 (--transformers-version) · loss: shift-copy" in page.read_text()
    vlm = CliRunner().invoke(cli, ["recommend", "--model", "qwen2-vl-2b", "--gpu", "t4", "--transformers-version", "4.46.0", "--json"])
    assert vlm.exit_code == 0, vlm.output
    assert json.loads(vlm.output)["stack"]["loss_path"] == "shift-copy"
