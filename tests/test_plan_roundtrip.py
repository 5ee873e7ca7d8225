"""A multi-GPU plan through every command that reads plans: `recommend --out` -> `estimate --plan` and `run --plan`.

`run` is checked at its launch decision (how many processes, which strategy, which RunConfig):
the two-process training itself is test_distributed_run's.
"""

import json

import pytest
from click.testing import CliRunner

import vramplan.run_cmd  # noqa: F401  (registers `run`)
from vramplan.calibrate.trainer import distributed, loop
from vramplan.cli import cli
from vramplan.planner.catalog import resolve_gpu
from vramplan.planner.plan_file import plan_document, write_plan
from vramplan.planner.sharding import ParallelPlan
from vramplan.planner.specs import RunConfig

from .test_trainer import make_rows, make_tokenizer, tiny_llama_config, write_jsonl

A100 = resolve_gpu("a100-80gb")
A100_ENTRY = {"name": A100.name, "key": A100.key, "total_bytes": A100.total_bytes}


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def error_line(result) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert lines, result.output
    return lines[-1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A config-only tiny llama (random init) with its tokenizer, and data: enough for `run` to plan."""
    root = tmp_path_factory.mktemp("plan-roundtrip")
    tokenizer = make_tokenizer()
    tiny_llama_config(len(tokenizer)).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return {"model": root / "model", "data": write_jsonl(root / "train.jsonl", make_rows(8))}


@pytest.fixture
def launches(monkeypatch):
    """Record what `run` would launch instead of starting processes (or a single-process run)."""
    calls = []

    def fake_launch(config, gpus, strategy, device):
        calls.append({"gpus": gpus, "strategy": strategy, "device": device, "run": config.run, "grad_accum": config.grad_accum})
        return 0

    def fake_train(config):
        calls.append({"gpus": 1, "strategy": None, "device": config.device, "run": config.run, "grad_accum": config.grad_accum})
        raise SystemExit(0)  # stop before the summary: nothing was trained

    monkeypatch.setattr(distributed, "launch", fake_launch)
    monkeypatch.setattr(loop, "train", fake_train)
    return calls


def recommend_plan(path, model, gpus):
    result = invoke("recommend", "--model", model, "--gpu", "a100-80gb", "--gpus", gpus, "--out", path, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["recommendations"][0]


def estimate_plan(path, *flags):
    result = invoke("estimate", "--plan", path, "--json", *flags)
    assert result.exit_code == 0, result.output
    (only,) = json.loads(result.output)["estimates"]
    return only


def test_seventy_b_fsdp_plan_keeps_its_four_gpus(tiny, tmp_path, launches):
    """The issue's case: 70B LoRA on 4 x A100-80GB under FSDP (62 GiB each), not one GPU of 164 GiB."""
    plan = tmp_path / "plan.yaml"
    best = recommend_plan(plan, "70b", 4)
    assert (best["config"]["gpus"], best["config"]["strategy"]) == (4, "fsdp")

    estimated = estimate_plan(plan)
    assert estimated["per_gpu"] == {"gpus": 4, "strategy": "fsdp", "offload": "none", "host_bytes": 0}
    assert estimated["device_used_bytes"] == best["device_used_bytes"] < A100.total_bytes
    assert estimated["fits"] is True
    one_gpu = estimate_plan(plan, "--gpus", 1)  # a flag given wins over the plan
    assert one_gpu["per_gpu"] is None and one_gpu["device_used_bytes"] > 2 * A100.total_bytes
    assert estimate_plan(plan, "--gpus", 8)["per_gpu"]["gpus"] == 8

    # run: on this CPU-only box the plan's FSDP is refused for what it is, not run on one device
    args = ("run", "--apply-recommendation", "--plan", plan, "--model", tiny["model"], "--data", tiny["data"],
            "--gpu", "a100-80gb", "--out", tmp_path / "out", "--force", "--no-progress")
    refused = invoke(*args, "--device", "cpu")
    assert error_line(refused).startswith("Error: --strategy fsdp needs CUDA devices")
    assert "ignored unknown config keys" not in refused.output
    assert launches == []

    monkeypatched_devices = pytest.MonkeyPatch()
    monkeypatched_devices.setattr(distributed, "check_launch", lambda *a: None)  # as if 4 CUDA devices were there
    try:
        result = invoke(*args, "--device", "cuda")
    finally:
        monkeypatched_devices.undo()
    assert result.exit_code == 0, result.output
    assert "ignored unknown config keys" not in result.output
    (launched,) = launches
    assert (launched["gpus"], launched["strategy"], launched["device"]) == (4, "fsdp", "cuda")
    run = launched["run"]
    assert (run.method, run.rank, run.batch, run.seq_len, run.targets) == ("lora", 16, best["config"]["batch"], 2048, ("all-linear",))


def test_small_model_ddp_plan_launches_two_processes(tiny, tmp_path, launches):
    plan = tmp_path / "plan.json"
    best = recommend_plan(plan, tiny["model"], 2)
    assert (best["config"]["gpus"], best["config"]["strategy"]) == (2, "ddp")  # a tiny model needs no sharding
    assert json.loads(plan.read_text())["model"] == str(tiny["model"].resolve())  # a local model: its path

    estimated = estimate_plan(plan)
    assert estimated["per_gpu"]["gpus"] == 2 and estimated["per_gpu"]["strategy"] == "ddp"
    assert estimated["device_used_bytes"] == best["device_used_bytes"]

    args = ("run", "--apply-recommendation", "--plan", plan, "--model", tiny["model"], "--data", tiny["data"],
            "--gpu", "a100-80gb", "--device", "cpu", "--no-progress")
    result = invoke(*args, "--out", tmp_path / "two")
    assert result.exit_code == 0, result.output
    assert "note:" not in result.output  # nothing ignored, nothing overridden
    assert launches[-1]["gpus"] == 2 and launches[-1]["strategy"] == "ddp" and launches[-1]["device"] == "cpu"
    assert launches[-1]["grad_accum"] == best["config"]["grad_accum"]

    single = invoke(*args, "--out", tmp_path / "one", "--gpus", 1)  # typed: one process, the plan's strategy dropped
    assert single.exit_code == 0, single.output
    assert "note: --gpus 1 overrides the plan's gpus 2" in single.output
    assert launches[-1]["gpus"] == 1 and launches[-1]["strategy"] is None and len(launches) == 2


def test_a_zero_stage_runs_as_fsdp_and_offload_is_refused(tiny, tmp_path, launches):
    plan = tmp_path / "plan.yaml"
    run = RunConfig(method="lora", batch=1, seq_len=64, precision="bf16")
    write_plan(plan, plan_document(str(tiny["model"]), A100_ENTRY, run, ParallelPlan("zero2", 2)))
    args = ("run", "--plan", plan, "--model", tiny["model"], "--data", tiny["data"], "--gpu", "a100-80gb",
            "--out", tmp_path / "out", "--device", "cpu")
    result = invoke(*args)
    assert "note: --plan: strategy zero2 runs as fsdp" in result.output
    assert error_line(result).startswith("Error: --strategy fsdp needs CUDA devices")

    write_plan(plan, plan_document(str(tiny["model"]), A100_ENTRY, run, ParallelPlan("fsdp", 2, "optimizer")))
    assert error_line(invoke(*args)) == (
        f"Error: --plan {plan}: offload 'optimizer': the bundled trainer keeps weights and optimizer states on the device; "
        "make a plan without offload, or pass --force to train without it"
    )
    estimated = estimate_plan(plan)
    assert estimated["per_gpu"]["offload"] == "optimizer" and estimated["per_gpu"]["host_bytes"] > 0


@pytest.mark.parametrize("command", ["estimate", "run"])
def test_bad_plan_files_are_one_line_errors(tiny, tmp_path, command):
    good = tmp_path / "good.yaml"
    write_plan(good, plan_document("meta-llama/Meta-Llama-3-70B", A100_ENTRY, RunConfig(method="lora"), ParallelPlan("fsdp", 4)))
    text = good.read_text()
    extra = ("--model", tiny["model"], "--data", tiny["data"], "--out", tmp_path / "out") if command == "run" else ()

    truncated = tmp_path / "truncated.yaml"
    truncated.write_text(text[: text.index("config:")])
    assert error_line(invoke(command, "--plan", truncated, *extra)) == (
        f"Error: --plan {truncated} has no config (a truncated file?): write it again with `vramplan recommend ... --out FILE`"
    )
    no_gpu = tmp_path / "no-gpu.yaml"
    no_gpu.write_text("".join(line for line in text.splitlines(True) if not line.startswith(("gpu:", "  name:", "  key:", "  total_bytes:"))))
    assert error_line(invoke(command, "--plan", no_gpu, *extra)).startswith(f"Error: --plan {no_gpu} has no gpu (a truncated file?)")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    assert error_line(invoke(command, "--plan", binary, *extra)).startswith(f"Error: --plan {binary} is not UTF-8 text")
