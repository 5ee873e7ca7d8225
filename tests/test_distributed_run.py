"""`vramplan run --gpus N --strategy ...`: a real two-process CPU DDP run through `accelerate launch`."""

import pytest
import torch
import yaml
from vramplan.calibrate.store import Store

from tests.test_trainer import (
    RUN_FLAGS,
    cli_run,
    error_line,
    make_rows,
    make_tokenizer,
    tiny_llama_config,
    write_jsonl,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny llama of test_trainer (with weights and its tokenizer) and its data."""
    from transformers import LlamaForCausalLM

    root = tmp_path_factory.mktemp("distributed")
    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(len(tokenizer))).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return {"model": root / "model", "data": write_jsonl(root / "train.jsonl", make_rows())}


def test_gpus_without_strategy_is_one_line_error(tiny, tmp_path):
    result = cli_run("--model", tiny["model"], "--data", tiny["data"], "--out", tmp_path / "out", "--gpus", 2, "--device", "cpu")
    assert result.exit_code != 0
    assert error_line(result) == "Error: --gpus above 1 needs --strategy: ddp or fsdp"
    assert not (tmp_path / "out").exists()


def test_fsdp_on_cpu_is_refused(tiny, tmp_path):
    result = cli_run("--model", tiny["model"], "--data", tiny["data"], "--out", tmp_path / "out", "--gpus", 2, "--strategy", "fsdp", "--device", "cpu")
    assert error_line(result).startswith("Error: --strategy fsdp needs CUDA devices")


@pytest.mark.slow
def test_two_process_cpu_ddp_run(tiny, tmp_path):
    out, db = tmp_path / "out", tmp_path / "runs.db"
    result = cli_run(
        "--model", tiny["model"], "--data", tiny["data"], "--out", out, "--db", db, *RUN_FLAGS, "--lr", "1e-2",
        "--gpus", 2, "--strategy", "ddp", "--max-steps", 3, "--device", "cpu", "--no-progress",
    )
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "accelerate_config.yaml").read_text())
    assert config["num_processes"] == 2 and config["distributed_type"] == "MULTI_CPU"
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    (record,) = Store.open(db).runs()
    trainer = record.environment["trainer"]
    peaks = trainer["per_rank_peak_bytes"]
    assert len(peaks) == 2 and all(p > 0 for p in peaks), peaks
    assert record.outcome == "ok" and trainer["steps"] == 3 and trainer["processes"] == 2 and trainer["tokens_per_s"] > 0
    assert record.peak_allocated_bytes == peaks[0]


def test_launch_checks_the_per_gpu_estimate(tiny, tmp_path):
    from vramplan.calibrate.trainer.distributed import check_per_gpu_fit
    from vramplan.calibrate.trainer.loop import TrainConfig
    from vramplan.planner.catalog import custom_gpu
    from vramplan.planner.errors import ConfigError
    from vramplan.planner.specs import RunConfig

    run = RunConfig(method="lora", batch=2, seq_len=64)
    small = TrainConfig(tiny["model"], tiny["data"], tmp_path / "out", run=run, gpu=custom_gpu(1 << 20))
    with pytest.raises(ConfigError, match=r"per GPU with ddp on 2 x custom GPU .* does not fit"):
        check_per_gpu_fit(small, 2, "ddp")
    roomy = TrainConfig(tiny["model"], tiny["data"], tmp_path / "out", run=run, gpu=custom_gpu(8 << 30))
    assert check_per_gpu_fit(roomy, 2, "ddp").force  # checked per GPU: the ranks skip the single-GPU check
