"""CliRunner tests for estimate, models and gpus: happy paths, JSON schema, every bad input."""

import json

import pytest
from click.testing import CliRunner

from vramplan.cli import cli


def run(*args):
    result = CliRunner().invoke(cli, list(args))
    return result


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert lines, result.output
    return lines[-1]


def test_estimate_table_shows_methods_side_by_side():
    result = run("estimate", "--model", "8b", "--gpu", "t4")
    assert result.exit_code == 0, result.output
    for text in ("Full", "LoRA", "QLoRA", "DoRA", "weights/base", "activations/logits", "fits?", "max batch", "meta-llama/Llama-3.1-8B"):
        assert text in result.output
    assert "Traceback" not in result.output


def test_estimate_json_schema():
    result = run("estimate", "--model", "llama-3-8b", "--gpu", "t4", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["model"]["name"] == "meta-llama/Meta-Llama-3-8B"
    assert doc["model"]["base_params"] == 8_030_261_248
    assert doc["gpu"]["name"] == "NVIDIA Tesla T4"
    assert doc["gpu"]["total_bytes"] > 15 * 10**9
    methods = [e["method"] for e in doc["estimates"]]
    assert methods == ["full", "lora", "qlora", "dora"]
    for est in doc["estimates"]:
        for key in ("trainable_params", "components", "peak_allocated_bytes", "peak_reserved_bytes", "device_used_bytes", "fits", "max_batch", "max_seq_len", "config"):
            assert key in est
        for key in ("rank", "alpha", "targets", "batch", "seq_len", "grad_ckpt", "optimizer", "precision", "attention"):
            assert key in est["config"]
        by_stat = {"allocated": 0, "reserved": 0, "device": 0}
        for name, n_bytes in est["components"].items():
            by_stat[est["component_stats"][name]] += n_bytes
        assert by_stat["allocated"] == est["peak_allocated_bytes"]
        assert by_stat["allocated"] + by_stat["reserved"] == est["peak_reserved_bytes"]
        assert sum(by_stat.values()) == est["device_used_bytes"]
    lora = doc["estimates"][1]
    assert lora["trainable_params"] == 41_943_040
    assert lora["config"]["precision"] == "fp16"  # T4 has no bf16
    full, qlora = doc["estimates"][0], doc["estimates"][2]
    assert full["fits"] is False and full["max_batch"] == 0
    assert qlora["fits"] is True and qlora["max_batch"] >= 1 and qlora["max_seq_len"] >= 2048


def test_method_narrows_and_gpu_mem():
    result = run("estimate", "-m", "qwen3-8b", "--gpu-mem", "24GB", "--method", "qlora,qdora", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [e["method"] for e in doc["estimates"]] == ["qlora", "qdora"]
    assert doc["gpu"]["total_bytes"] == 24 * 10**9


def test_local_config_path(tiny_config_dir):
    result = run("estimate", "--model", str(tiny_config_dir), "--json", "--method", "lora", "--targets", "q,v", "--rank", "4")
    assert result.exit_code == 0, result.output
    est = json.loads(result.output)["estimates"][0]
    # q: 64 -> 64, v: 64 -> 32 (2 kv heads x 16); r (in + out) per module, 2 layers
    assert est["trainable_params"] == 2 * 4 * ((64 + 64) + (64 + 32))


def test_models_and_gpus_lists():
    models = run("models")
    assert models.exit_code == 0 and "Qwen3-8B" in models.output and "Size shorthands" in models.output
    catalog = {m["id"]: m for m in json.loads(run("models", "--json").output)}
    assert catalog["meta-llama/Meta-Llama-3-8B"]["base_params"] == 8_030_261_248
    assert "llama-3-8b" in catalog["meta-llama/Meta-Llama-3-8B"]["aliases"]
    gpus = json.loads(run("gpus", "--json").output)
    assert {g["key"] for g in gpus} >= {"t4", "v100-16gb", "v100-32gb", "a10g", "l4", "rtx3090", "rtx4090", "l40s", "a100-40gb", "a100-80gb", "h100", "h200"}


BAD_INPUTS = [
    (["--model", "llama-9-8b"], "Error: unknown model 'llama-9-8b': did you mean"),
    (["--model", "8b", "--gpu", "t5"], "Error: unknown GPU 't5': did you mean t4"),
    (["--model", "8b", "--gpu", "a100"], "Error: --gpu 'a100' is ambiguous: choose one of a100-40gb, a100-80gb"),
    (["--model", "8b", "--rank", "0"], "Error: --rank must be a whole number greater than 0, got 0"),
    (["--model", "8b", "--batch", "-1"], "Error: --batch must be a whole number greater than 0, got -1"),
    (["--model", "8b", "--seq-len", "0"], "Error: --seq-len must be a whole number greater than 0, got 0"),
    (["--model", "8b", "--targets", "q,wq"], "Error: --targets 'wq' not in meta-llama/Llama-3.1-8B"),
    (["--model", "8b", "--gpu-mem", "lots"], "Error: --gpu-mem 'lots' is not a memory size; write a number and a unit, e.g. 22GiB or 24GB"),
    (["--model", "8b", "--method", "ia3"], "Error: --method 'ia3' is not one of: full, lora, qlora, dora, qdora, adapter, adapter-pfeiffer, qadapter"),
    (["--model", "8b", "--optimizer", "lion"], "Error: Invalid value for '--optimizer': 'lion' is not one of"),
    (["--model", "8b", "--gpu", "t4", "--precision", "bf16"], "Error: NVIDIA Tesla T4 has no bf16 support: use --precision fp16 or fp16-mixed"),
    (["--model", "8b", "--gpu", "t4", "--gpu-mem", "16GB"], "Error: give either --gpu or --gpu-mem, not both"),
    (["--model", "8b", "--dropout", "1.5"], "Error: --dropout must be in [0, 1), got 1.5"),
    (["--model", "some-org/not-in-catalog"], "Error: 'some-org/not-in-catalog' is not in the catalog and HF_HUB_OFFLINE is set"),
]


@pytest.mark.parametrize("args,expected", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_clear_line(args, expected):
    result = run("estimate", *args)
    assert result.exit_code != 0
    assert error_line(result).startswith(expected), result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_missing_and_malformed_config(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("estimate", "--model", str(empty))
    assert result.exit_code == 1
    assert error_line(result) == f"Error: {empty} has no config.json; pass a model directory that contains one, or the file itself"
    broken = tmp_path / "config.json"
    broken.write_text("{not json")
    result = run("estimate", "--model", str(broken))
    assert result.exit_code == 1
    assert error_line(result).startswith(f"Error: {broken} is not valid JSON")
    no_type = tmp_path / "notype.json"
    no_type.write_text(json.dumps({"hidden_size": 8}))
    assert error_line(run("estimate", "--model", str(no_type))).endswith("does not look like a transformers config.json")


def test_per_gpu_estimate_with_a_strategy():
    one = json.loads(run("estimate", "-m", "70b", "-g", "a100-80gb", "--method", "lora", "--json").output)["estimates"][0]
    four = json.loads(run("estimate", "-m", "70b", "-g", "a100-80gb", "--method", "lora", "--gpus", "4", "--strategy", "fsdp", "--json").output)["estimates"][0]
    assert four["per_gpu"] == {"gpus": 4, "strategy": "fsdp", "offload": "none", "host_bytes": 0}
    assert one["fits"] is False and four["fits"] is True
    assert four["components"]["weights/base"] == one["components"]["weights/base"] // 4
    assert "distributed/gathered_params" in four["components"]


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--gpus", "4"], "Error: --gpus above 1 needs --strategy: ddp, fsdp, fsdp-grad-op, zero1, zero2 or zero3"),
        (["--gpus", "1", "--strategy", "ddp"], "Error: --gpus must be 2 or more with --strategy, got 1"),
        (["--gpus", "2", "--strategy", "zero2", "--offload", "params"], "Error: --offload params needs a parameter-sharding strategy (fsdp or zero3), not zero2"),
    ],
)
def test_bad_parallel_flags(args, expected):
    result = run("estimate", "-m", "70b", *args)
    assert result.exit_code != 0
    assert error_line(result).startswith(expected), result.output
