"""planner/plan_file.py: write -> read gives back the same run and parallel plan; bad files are one ConfigError."""

import json

import pytest
from vramplan.planner.advisor import recommend
from vramplan.planner.catalog import catalog_spec, custom_gpu, resolve_gpu
from vramplan.planner.errors import ConfigError, VramplanError
from vramplan.planner.plan_file import (
    gpu_from_plan,
    parallel_from_plan,
    parallel_plan,
    plan_document,
    read_plan,
    run_from_plan,
    validate_plan,
    with_flags,
    write_plan,
)
from vramplan.planner.sharding import ParallelPlan
from vramplan.planner.specs import RunConfig
from vramplan.reports.advice import config_of

A100 = {"name": "NVIDIA A100 80GB", "key": "a100-80gb", "total_bytes": resolve_gpu("a100-80gb").total_bytes}
CASES = [
    (RunConfig(method="lora", rank=8, alpha=16.0, dropout=0.1, targets=("q", "v"), batch=2, seq_len=512), None),
    (RunConfig(method="qlora", alpha=32.0, batch=4, precision="fp16", double_quant=False, adapter_dtype="fp16"),
     ParallelPlan("fsdp", 4, "optimizer")),
    (RunConfig(method="full", grad_ckpt=False, optimizer="adamw-8bit", attention="eager", seq_len=1024), ParallelPlan("zero3", 8, "params")),
    (RunConfig(method="dora", rank=64, alpha=128.0, targets=("all-linear", "lm_head"), precision="bf16-mixed"), ParallelPlan("ddp", 2)),
]


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
@pytest.mark.parametrize("run,parallel", CASES)
def test_write_then_read_gives_the_same_run_and_parallel_plan(tmp_path, suffix, run, parallel):
    path = tmp_path / f"plan{suffix}"
    write_plan(path, plan_document("meta-llama/Meta-Llama-3-8B", A100, run, parallel, goal="quality", reasons=("why",)))
    plan = read_plan(path)
    assert run_from_plan(plan) == run
    assert parallel_from_plan(plan) == parallel
    assert gpu_from_plan(plan) == resolve_gpu("a100-80gb")
    assert plan["model"] == "meta-llama/Meta-Llama-3-8B" and plan["reasons"] == ["why"]


def test_a_recommendation_round_trips_with_its_gpus_and_strategy(tmp_path):
    seventy = catalog_spec("meta-llama/Meta-Llama-3-70B")
    best = recommend(seventy, resolve_gpu("a100-80gb"), 2048, gpus=4)[0]
    assert best.parallel == ParallelPlan("fsdp", 4)
    path = tmp_path / "plan.yaml"
    write_plan(path, plan_document(seventy.name, A100, best.run, best.parallel, training=config_of(best)))
    plan = read_plan(path)
    assert run_from_plan(plan) == RunConfig(**{**best.run.__dict__, "alpha": best.run.lora_alpha})  # alpha is written resolved
    assert parallel_from_plan(plan) == best.parallel
    config = plan["config"]
    assert (config["gpus"], config["strategy"], config["offload"]) == (4, "fsdp", "none")
    assert config["grad_accum"] == best.grad_accum and config["learning_rate"] == best.learning_rate  # the training keys stay


def test_a_custom_gpu_and_no_gpu(tmp_path):
    gpu = custom_gpu(22 * 2**30)
    path = tmp_path / "plan.json"
    write_plan(path, plan_document("8b", {"name": gpu.name, "key": "custom", "total_bytes": gpu.total_bytes}, RunConfig(), None))
    assert gpu_from_plan(read_plan(path)) == gpu
    write_plan(path, plan_document("8b", None, RunConfig(), None))
    assert gpu_from_plan(read_plan(path)) is None


def test_flags_over_a_plans_parallel_settings():
    planned = ParallelPlan("fsdp", 4)
    assert with_flags(planned) == planned
    assert with_flags(planned, gpus=8) == ParallelPlan("fsdp", 8)
    assert with_flags(planned, strategy="zero2") == ParallelPlan("zero2", 4)
    assert with_flags(planned, gpus=1) is None  # one GPU shards nothing
    assert with_flags(None, gpus=2, strategy="ddp") == ParallelPlan("ddp", 2)
    assert with_flags(planned, offload="optimizer") == ParallelPlan("fsdp", 4, "optimizer")
    assert parallel_plan(1, None, "none") is None
    with pytest.raises(ConfigError, match="--gpus above 1 needs --strategy"):
        parallel_plan(2, None)


# ---------------------------------------------------------------- bad files
def good_plan(tmp_path, suffix=".yaml"):
    path = tmp_path / f"plan{suffix}"
    write_plan(path, plan_document("meta-llama/Meta-Llama-3-70B", A100, RunConfig(method="lora", batch=4), ParallelPlan("fsdp", 4)))
    return path


def error(path, *readers) -> str:
    with pytest.raises(ConfigError) as info:
        plan = read_plan(path)
        for reader in readers:
            reader(plan)
    return str(info.value)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_every_truncation_is_a_clean_error_or_a_plan(tmp_path, suffix):
    """Cut anywhere, a plan reads back or fails with a domain error: never KeyError, TypeError, ..."""
    text = good_plan(tmp_path, suffix).read_text()
    cut = tmp_path / f"cut{suffix}"
    for end in range(len(text)):
        cut.write_text(text[:end])
        try:
            plan = read_plan(cut)
            run_from_plan(plan)
            parallel_from_plan(plan)
            gpu_from_plan(plan)
        except VramplanError:
            pass


def test_truncated_files_say_what_is_missing(tmp_path):
    text = good_plan(tmp_path).read_text()
    cut = tmp_path / "cut.yaml"
    cut.write_text(text[: text.index("config:")])
    assert error(cut) == f"--plan {cut} has no config (a truncated file?): write it again with `vramplan recommend ... --out FILE`"
    cut.write_text(text[: text.index("  seq_len:")])
    assert error(cut, run_from_plan).startswith("--plan: config has no seq_len (a truncated file?)")
    json_path = good_plan(tmp_path, ".json")
    json_path.write_text(json_path.read_text()[:200])
    assert error(json_path).startswith(f"--plan {json_path} is not valid JSON (")


def test_a_plan_without_gpu_or_model(tmp_path):
    path = good_plan(tmp_path, ".json")
    document = json.loads(path.read_text())
    del document["gpu"], document["model"]
    path.write_text(json.dumps(document))
    assert error(path).startswith(f"--plan {path} has no model, gpu (a truncated file?)")


def test_not_utf8(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_bytes(b"vramplan_plan: 1\nmodel: \xff\xfe\n")
    assert error(path) == (f"--plan {path} is not UTF-8 text (byte 24); a plan is the JSON or YAML `vramplan recommend --out` writes")


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"vramplan_plan": 2}, "has plan format 2; this vramplan reads format 1"),
        ({"gpu": {"name": "x", "key": "a100-80gb"}}, ": gpu has no total_bytes;"),
        ({"gpu": "a100"}, ": gpu must be a mapping of name, key, total_bytes (or null), got 'a100';"),
        ({"config": {"batch": 1}}, ": config has no method;"),
        ({"config": {"method": "lora", "gpus": 0, "strategy": "zero9"}},
         ": config.gpus must be a whole number of 1 or more, got 0; config.strategy 'zero9' is not one of:"),
        ({"model": ""}, ": model must be a model name, got '';"),
    ],
)
def test_invalid_documents(tmp_path, change, expected):
    path = tmp_path / "plan.json"
    document = {**json.loads(good_plan(tmp_path, ".json").read_text()), **change}
    path.write_text(json.dumps(document))
    assert expected in error(path)
    with pytest.raises(ConfigError):  # what reading refuses, writing refuses too
        write_plan(tmp_path / "again.json", document)


def test_impossible_values_name_the_plan(tmp_path):
    path = tmp_path / "plan.json"
    document = json.loads(good_plan(tmp_path, ".json").read_text())
    document["config"].update(strategy="ddp", offload="optimizer")
    path.write_text(json.dumps(document))
    assert error(path, parallel_from_plan).startswith("--plan: --offload needs fsdp or a DeepSpeed ZeRO stage")
    document["config"].update(strategy="fsdp", offload="none", batch=0)
    path.write_text(json.dumps(document))
    assert error(path, run_from_plan).startswith("--plan: --batch")
    document["config"]["batch"] = "four"
    path.write_text(json.dumps(document))
    assert "--plan: " in error(path, run_from_plan)


def test_validate_needs_the_version_key():
    with pytest.raises(ConfigError, match="is not a vramplan plan"):
        validate_plan({"model": "x", "gpu": None, "config": {"method": "lora"}}, "--plan x.json")
