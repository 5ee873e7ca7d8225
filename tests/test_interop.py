"""Other tools' configs: every example file gives the estimate of the equivalent vramplan flags,
every export reads back to the same estimate, and what was not understood is listed."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from vramplan.cli import cli
from vramplan.planner.interop import EXPORTS, read_tool_configs

DATA = Path(__file__).parent / "data" / "interop"
GPU = ["--gpu", "a100-80gb"]

# (files, extra flags with --from, the same run as plain flags; --grad-accum: the file's accumulation steps)
CASES = {
    "axolotl qlora": (["axolotl-llama3-qlora.yml"], [], [
        "--model", "meta-llama/Meta-Llama-3-8B", "--method", "qlora", "--rank", "32", "--alpha", "16", "--dropout", "0.05",
        "--targets", "all-linear", "--batch", "2", "--seq-len", "4096", "--grad-ckpt", "--optimizer", "paged-adamw-32bit",
        "--attention", "flash", "--double-quant", "--packing", "--grad-accum", "4"]),
    "axolotl full zero3": (["axolotl-qwen-full-zero3.yml"], ["--gpus", "8"], [
        "--model", "Qwen/Qwen2.5-7B", "--method", "full", "--batch", "1", "--seq-len", "2048", "--grad-ckpt",
        "--optimizer", "adamw", "--precision", "bf16", "--attention", "sdpa", "--gpus", "8", "--strategy", "zero3", "--loss", "fused", "--grad-accum", "16"]),
    "llama-factory lora": (["llama-factory-llama3-lora-sft.yaml"], [], [
        "--model", "meta-llama/Meta-Llama-3-8B-Instruct", "--method", "lora", "--rank", "8", "--dropout", "0",
        "--targets", "all-linear", "--batch", "1", "--seq-len", "2048", "--grad-ckpt", "--optimizer", "adamw",
        "--precision", "bf16", "--attention", "sdpa", "--grad-accum", "8"]),
    "llama-factory qdora": (["llama-factory-qwen-qlora.yaml"], [], [
        "--model", "Qwen/Qwen2.5-7B", "--method", "qdora", "--rank", "16", "--alpha", "32", "--dropout", "0.05",
        "--targets", "q_proj,k_proj,v_proj,o_proj", "--batch", "4", "--seq-len", "1024", "--grad-ckpt",
        "--optimizer", "paged-adamw-8bit", "--precision", "bf16", "--attention", "flash", "--no-double-quant", "--grad-accum", "4"]),
    "trl sft yaml": (["trl-sft-qwen-lora.yaml"], [], [
        "--model", "Qwen/Qwen2.5-0.5B", "--method", "lora", "--rank", "32", "--alpha", "16", "--dropout", "0.05",
        "--targets", "q_proj,v_proj", "--batch", "2", "--seq-len", "1024", "--grad-ckpt", "--optimizer", "adamw",
        "--precision", "bf16-mixed", "--attention", "sdpa", "--packing", "--grad-accum", "8"]),
    "TrainingArguments json + adapter_config": (["hf-training-args.json", "adapter_config.json"], ["--method", "qlora", "--seq-len", "512"], [
        "--model", "meta-llama/Llama-3.2-1B", "--method", "qlora", "--rank", "16", "--alpha", "32", "--dropout", "0.1",
        "--targets", "all-linear", "--batch", "4", "--seq-len", "512", "--grad-ckpt", "--optimizer", "paged-adamw-8bit",
        "--precision", "bf16", "--attention", "sdpa", "--grad-accum", "4"]),
    "torchtune lora": (["torchtune-llama3-8b-lora.yaml"], ["--seq-len", "2048"], [
        "--model", "meta-llama/Meta-Llama-3-8B", "--method", "lora", "--rank", "8", "--alpha", "16", "--dropout", "0",
        "--targets", "q,v,o,mlp", "--batch", "2", "--seq-len", "2048", "--grad-ckpt", "--optimizer", "adamw",
        "--precision", "bf16", "--adapter-dtype", "bf16", "--attention", "sdpa", "--grad-accum", "8"]),
    "torchtune qlora": (["torchtune-llama3_2-1b-qlora.yaml"], [], [
        "--model", "meta-llama/Llama-3.2-1B", "--method", "qlora", "--rank", "64", "--alpha", "128", "--dropout", "0",
        "--targets", "q,v,o,mlp", "--batch", "4", "--seq-len", "2048", "--grad-ckpt", "--optimizer", "paged-adamw-8bit",
        "--precision", "bf16", "--adapter-dtype", "bf16", "--no-double-quant", "--attention", "sdpa"]),
    "accelerate fsdp + trl": (["accelerate-fsdp.yaml", "trl-sft-qwen-lora.yaml"], [], [
        "--model", "Qwen/Qwen2.5-0.5B", "--method", "lora", "--rank", "32", "--alpha", "16", "--dropout", "0.05",
        "--targets", "q_proj,v_proj", "--batch", "2", "--seq-len", "1024", "--grad-ckpt", "--optimizer", "adamw",
        "--precision", "bf16-mixed", "--attention", "sdpa", "--gpus", "4", "--strategy", "fsdp", "--packing", "--grad-accum", "8"]),
}


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def estimates(*args):
    result = invoke("estimate", *args, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    return document, [{k: v for k, v in e.items() if k != "calibration"} for e in document["estimates"]]


def error_line(result) -> str:
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert lines and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_example_config_gives_the_estimate_of_the_same_flags(case):
    files, extra, flags = CASES[case]
    from_args = [a for f in files for a in ("--from", DATA / f)]
    imported, got = estimates(*from_args, *extra, *GPU)
    _, want = estimates(*flags, *GPU)
    assert got == want
    assert [name.rsplit(" (", 1)[0] for name in imported["from"]["files"]] == [str(DATA / f) for f in files]
    assert imported["from"]["mapped"], "every file maps settings"


def test_not_understood_and_not_modelled_keys_are_listed():
    imported = read_tool_configs([DATA / "axolotl-qwen-full-zero3.yml"])
    assert imported.not_understood == ("my_custom_key",)
    assert imported.settings["loss"] == "fused"  # Liger's fused linear cross-entropy: planner/savers.py models it
    assert "learning_rate" in imported.no_effect and "datasets" in imported.no_effect
    torchtune = read_tool_configs([DATA / "torchtune-llama3-8b-lora.yaml"])
    assert any(item.startswith("loss._component_: CEWithChunkedOutputLoss") for item in torchtune.not_modelled)
    for name in ("adapter_config.json", "hf-training-args.json", "trl-sft-qwen-lora.yaml", "llama-factory-llama3-lora-sft.yaml",
                 "axolotl-llama3-qlora.yml", "torchtune-llama3_2-1b-qlora.yaml", "accelerate-fsdp.yaml"):
        assert read_tool_configs([DATA / name]).not_understood == (), name


def test_the_text_output_says_where_settings_came_from():
    result = invoke("estimate", "--from", DATA / "axolotl-qwen-full-zero3.yml", "--gpus", "8", *GPU)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"--from {DATA / 'axolotl-qwen-full-zero3.yml'} (axolotl): 13 settings read")
    assert "  not understood (ignored): my_custom_key" in lines
    assert any(line.startswith("  note: deepspeed deepspeed_configs/zero3_bf16.json: not found, so the ZeRO stage (3)") for line in lines)


def test_flags_given_win_over_the_file():
    _, got = estimates("--from", DATA / "axolotl-llama3-qlora.yml", "--rank", "8", "--batch", "1", *GPU)
    assert got[0]["config"]["rank"] == 8 and got[0]["config"]["batch"] == 1 and got[0]["config"]["seq_len"] == 4096


def test_file_settings_the_estimate_cannot_do_need_a_flag():
    line = error_line(invoke("estimate", "--from", DATA / "hf-training-args.json", *GPU))
    assert line == (f"Error: TRL/TrainingArguments config {DATA / 'hf-training-args.json'}: a TrainingArguments file has no "
                    "sequence length (the data and the collator set it); pass --seq-len")
    line = error_line(invoke("estimate", "--from", DATA / "torchtune-llama3-8b-lora.yaml"))
    assert line.endswith("tokenizer.max_seq_len is not set (rows are not truncated, the longest decides); pass --seq-len")


@pytest.mark.parametrize("text, expected", [
    ("foo: 1\n", "cannot tell which tool this config is for (keys: foo); expected PEFT adapter_config.json: peft_type"),
    ("base_model: 8b\nlora_r: eight\nadapter: lora\nlora_target_linear: true\n", "lora_r must be a whole number, got 'eight'"),
    ("base_model: [unclosed\n", "is not valid YAML"),
    ("- a\n- b\n", "holds a list, not a mapping of settings"),
    ("base_model: 8b\nload_in_8bit: true\nadapter: lora\nlora_target_linear: true\n", "load_in_8bit: 8-bit base weights are not modelled"),
])
def test_unreadable_configs_are_one_line_errors(tmp_path, text, expected):
    path = tmp_path / "config.yml"
    path.write_text(text)
    assert expected in error_line(invoke("estimate", "--from", path))


def test_a_method_flag_settles_what_the_file_cannot(tmp_path):
    path = tmp_path / "freeze.yaml"
    path.write_text((DATA / "llama-factory-llama3-lora-sft.yaml").read_text().replace("finetuning_type: lora", "finetuning_type: freeze"))
    assert "finetuning_type freeze trains a few layers in full: not modelled; pass --method" in error_line(invoke("estimate", "--from", path))
    _, got = estimates("--from", path, "--method", "full", *GPU)
    assert got[0]["method"] == "full"


def test_missing_file_is_named():
    line = error_line(invoke("estimate", "--from", "nowhere.yml"))
    assert line == "Error: --from nowhere.yml does not exist; give an axolotl / LLaMA-Factory / TRL / torchtune / accelerate config or an adapter_config.json"


# ---------------------------------------------------------------- exports
@pytest.mark.parametrize("kind", EXPORTS)
def test_every_export_reads_back_to_the_same_estimate(tmp_path, kind):
    out, plan = tmp_path / f"{kind}.yaml", tmp_path / "plan.yaml"
    for args, written in ((["--export", kind, "--out", out], f"{kind} config written to {out}"), (["--out", plan], f"plan written to {plan}")):
        result = invoke("recommend", "--model", "8b", "--gpu", "t4", *args)
        assert result.exit_code == 0 and written in result.output, result.output
    from_doc, got = estimates("--from", out, "--gpu", "t4")
    _, want = estimates("--plan", plan)
    assert got == want
    assert from_doc["from"]["not_understood"] == []


@pytest.mark.parametrize("kind", ["trl", "axolotl", "accelerate"])
def test_a_sharded_export_reads_back_per_gpu(tmp_path, kind):
    out, plan = tmp_path / f"{kind}.yaml", tmp_path / "plan.yaml"
    for args in (["--export", kind, "--out", out], ["--out", plan]):
        assert invoke("recommend", "--model", "70b", "--gpu", "a100-80gb", "--gpus", "4", *args).exit_code == 0
    gpus = [] if kind == "accelerate" else ["--gpus", "4"]  # only an accelerate config holds the number of processes
    _, got = estimates("--from", out, "--gpu", "a100-80gb", *gpus)
    _, want = estimates("--plan", plan)
    assert got == want and got[0]["per_gpu"]["strategy"] == "fsdp"


def test_accelerate_export_loads_in_accelerate(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    out = tmp_path / "accelerate.yaml"
    assert invoke("recommend", "--model", "70b", "--gpu", "a100-80gb", "--gpus", "4", "--export", "accelerate", "--out", out).exit_code == 0
    config = load_config_from_file(str(out))
    assert config.distributed_type == "FSDP" and config.num_processes == 4 and config.mixed_precision == "bf16"


def test_export_over_the_users_file_keeps_their_other_keys(tmp_path):
    mine = tmp_path / "mine.yml"
    shutil.copy(DATA / "axolotl-llama3-qlora.yml", mine)
    out = tmp_path / "fixed.yml"
    result = invoke("recommend", "--from", mine, "--gpu", "l4", "--export", "axolotl", "--out", out)
    assert result.exit_code == 0, result.output
    import yaml

    fixed = yaml.safe_load(out.read_text())
    assert fixed["datasets"] == [{"path": "mhenrichsen/alpaca_2k_test", "type": "alpaca"}]
    assert fixed["special_tokens"] == {"pad_token": "<|end_of_text|>"} and fixed["sequence_len"] == 4096
    assert "lora_target_linear" not in fixed and fixed["lora_target_modules"]
    assert fixed["flash_attention"] is True and fixed["sample_packing"] is True  # their kernel and packing stay


def test_export_errors(tmp_path):
    assert error_line(invoke("recommend", "--model", "8b", "--gpu", "t4", "--export", "trl")) == \
        "Error: --export trl needs --out FILE (where to write the trl config)"
    line = error_line(invoke("recommend", "--model", "8b", "--gpu", "t4", "--method", "adapter", "--export", "axolotl", "--out", tmp_path / "a.yml"))
    assert line == "Error: --export axolotl: none of --method adapter is one axolotl trains (full, LoRA, QLoRA, DoRA, QDoRA)"
    assert error_line(invoke("recommend", "--gpu", "t4")) == "Error: --model is required (or --from FILE)"
