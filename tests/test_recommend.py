"""`vramplan recommend`: the advisor's choices, its JSON, plan files and bad input."""

import json

import pytest
from click.testing import CliRunner

from vramplan.cli import cli
from vramplan.planner.advisor import dataset_advice, recommend
from vramplan.planner.catalog import catalog_spec, resolve_gpu

from .test_cli import error_line

LLAMA3_8B = catalog_spec("meta-llama/Meta-Llama-3-8B")


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_every_recommendation_fits_with_its_margin():
    gpu = resolve_gpu("l4")
    recs = recommend(LLAMA3_8B, gpu, 2048, margin_ratio=0.05)
    assert recs
    for rec in recs:
        assert rec.estimate.breakdown.device_used_bytes <= 0.95 * gpu.total_bytes
        assert rec.run.batch * rec.grad_accum >= 16


def test_t4_gets_quantized_fp16_and_h100_a_16bit_base():
    t4 = recommend(LLAMA3_8B, resolve_gpu("t4"), 2048)[0]
    assert t4.run.method in ("qlora", "qdora") and t4.run.precision == "fp16"
    assert any("no bf16" in reason for reason in t4.reasons)
    h100 = recommend(LLAMA3_8B, resolve_gpu("h100"), 2048)[0]
    assert h100.run.method in ("lora", "dora", "full") and h100.run.precision == "bf16"


def test_dataset_size_sets_rank_and_epochs():
    assert dataset_advice(500).target_rank == 4 and dataset_advice(500).epochs == 3
    assert dataset_advice(5_000).target_rank == 16
    assert dataset_advice(50_000).target_rank == 32
    assert dataset_advice(500_000).full_worth_it
    small = recommend(LLAMA3_8B, resolve_gpu("a100-80gb"), 1024, dataset_size=500)[0]
    assert small.run.rank <= 8 and small.epochs == 3


def test_speed_goal_prefers_no_checkpointing_where_it_fits():
    fast = recommend(LLAMA3_8B, resolve_gpu("h100"), 1024, goal="speed")[0]
    assert not fast.run.grad_ckpt


def test_json_schema_and_plan_round_trip(tmp_path):
    plan = tmp_path / "plan.yaml"
    result = run("recommend", "--model", "8b", "--gpu", "l4", "--dataset-size", "5000", "--json", "--out", str(plan))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["gpu"]["name"] == "NVIDIA L4" and doc["gpu"]["total_bytes"] > 20 * 2**30
    best = doc["recommendations"][0]
    for key in ("config", "peak_reserved_bytes", "device_used_bytes", "margin_bytes", "reasons"):
        assert key in best
    for key in ("method", "rank", "alpha", "targets", "batch", "grad_accum", "grad_ckpt", "optimizer", "precision", "seq_len", "learning_rate", "epochs"):
        assert key in best["config"]
    assert best["margin_bytes"] == doc["gpu"]["total_bytes"] - best["device_used_bytes"]
    assert "margin 5%" in doc["margin"]
    estimated = json.loads(run("estimate", "--plan", str(plan), "--json").output)
    assert estimated["gpu"]["key"] == "l4"
    assert estimated["estimates"][0]["device_used_bytes"] == best["device_used_bytes"]


def test_dataset_sets_sequence_length(tmp_path):
    data = tmp_path / "train.jsonl"
    rows = [{"text": "word " * (40 + i)} for i in range(200)] + [{"instruction": "x" * 4000, "output": "y"}]
    data.write_text("\n".join(json.dumps(row) for row in rows))
    doc = json.loads(run("recommend", "--model", "qwen2.5-0.5b", "--gpu", "t4", "--dataset", str(data), "--json").output)
    # p99 = the 199th of 201 lengths: 238 words x 5 chars / 4 = 298 tokens, rounded up to 320
    assert doc["recommendations"][0]["config"]["seq_len"] == 320
    assert "201 examples" in doc["dataset"] and "truncates 1 of them" in doc["dataset"]


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--model", "8b"], "Error: recommend needs a GPU: --gpu KEY (see `vramplan gpus`) or --gpu-mem SIZE"),
        (["--model", "70b", "--gpu", "t4"], "Error: nothing fits meta-llama/Meta-Llama-3-70B on one NVIDIA Tesla T4 at seq-len 2048 with a 5% margin: QLoRA r=16 would fit on"),
        (["--model", "8b", "--gpu", "t4", "--seq-len", "0"], "Error: --seq-len must be greater than 0, got 0"),
        (["--model", "8b", "--gpu", "t4", "--dataset", "missing.jsonl"], "Error: --dataset missing.jsonl does not exist"),
    ],
)
def test_bad_input(args, expected):
    result = run("recommend", *args)
    assert result.exit_code != 0
    assert error_line(result).startswith(expected), result.output


def test_malformed_dataset_line_names_file_and_line(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "ok"}\n{broken\n')
    result = run("recommend", "--model", "8b", "--gpu", "t4", "--dataset", str(data))
    assert error_line(result).startswith(f"Error: {data}:2: ")


def test_plan_errors(tmp_path):
    bogus = tmp_path / "plan.json"
    bogus.write_text('{"hello": 1}')
    assert error_line(run("estimate", "--plan", str(bogus))).startswith(f"Error: --plan {bogus} is not a vramplan plan")


def test_several_gpus_get_the_least_sharding_that_fits():
    seventy = catalog_spec("meta-llama/Meta-Llama-3-70B")
    a100 = resolve_gpu("a100-80gb")
    best = recommend(seventy, a100, 2048, gpus=4)[0]
    assert best.parallel is not None and best.parallel.gpus == 4
    assert best.parallel.strategy == "fsdp"  # 140 GB of bf16 weights cannot be replicated on 80 GB cards
    assert best.estimate.breakdown.device_used_bytes <= 0.95 * a100.total_bytes
    assert best.run.batch * best.grad_accum * 4 >= 16
    small = recommend(LLAMA3_8B, a100, 2048, gpus=2)[0]
    assert small.parallel.strategy == "ddp"  # an 8B LoRA fits each card whole: no sharding needed


def test_one_gpu_that_is_too_small_is_told_how_many_it_needs():
    result = run("recommend", "--model", "70b", "--gpu", "l4")
    line = error_line(result)
    assert line.startswith("Error: nothing fits meta-llama/Meta-Llama-3-70B on one NVIDIA L4")
    assert "would fit on" in line and "with FSDP full shard (add --gpus" in line


def test_gpus_in_json():
    doc = json.loads(run("recommend", "--model", "70b", "--gpu", "a100-80gb", "--gpus", "4", "--json").output)
    config = doc["recommendations"][0]["config"]
    assert config["gpus"] == 4 and config["strategy"] == "fsdp"
