"""`recommend --export trl` writes a file TRL runs as is: `trl sft --config FILE` (TRL's own parser
and script) trains a tiny model for a few CPU steps from it, and an SFTTrainer built from the
export with the callback records its run."""

import json

import pytest
import torch
from click.testing import CliRunner

from tests.test_trainer import make_rows, make_tokenizer, tiny_llama_config, write_jsonl
from vramplan.cli import cli

trl = pytest.importorskip("trl")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A tiny Llama with a chat template, chat rows, and the TRL config `recommend` exports for them."""
    from transformers import LlamaForCausalLM

    root = tmp_path_factory.mktemp("trl")
    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(len(tokenizer))).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    data = write_jsonl(root / "chat.jsonl", [row for row in make_rows(60) if "messages" in row])
    out = root / "trl.yaml"
    result = CliRunner().invoke(cli, ["recommend", "--model", str(root / "model"), "--gpu-mem", "8GiB", "--method", "lora",
                                      "--seq-len", "64", "--dataset", str(data), "--export", "trl", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return root, out, json.loads(result.stdout)["recommendations"][0]["config"]


def parse(out, *overrides):
    from trl.scripts.sft import make_parser

    return make_parser().parse_args_and_config(args=["--config", str(out), *overrides])


def test_trl_sft_trains_from_the_export_as_is(export):
    from trl.scripts.sft import main

    root, out, planned = export
    script_args, training_args, model_args, dataset_args = parse(
        out, "--output_dir", str(root / "run"), "--max_steps", "3", "--save_strategy", "no", "--use_cpu", "true")
    # what the plan said, as TRL's own dataclasses hold it
    assert (training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps) == (planned["batch"], planned["grad_accum"])
    assert (training_args.max_length, training_args.gradient_checkpointing, training_args.optim) == (64, planned["grad_ckpt"], "adamw_torch")
    assert (model_args.use_peft, model_args.lora_r, model_args.lora_alpha) == (True, planned["rank"], planned["alpha"])
    assert sorted(model_args.lora_target_modules) == sorted(planned["targets"])
    lora = trl.get_peft_config(model_args)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (planned["rank"], planned["alpha"], planned["dropout"])
    main(script_args, training_args, model_args, dataset_args)
    assert (root / "run" / "adapter_model.safetensors").is_file()


def test_an_sft_trainer_from_the_export_records_its_run_with_the_callback(export):
    from datasets import load_dataset
    from trl import SFTTrainer

    from vramplan.calibrate.store import Store
    from vramplan.integrations import VramplanCallback

    root, out, planned = export
    script_args, training_args, model_args, dataset_args = parse(
        out, "--output_dir", str(root / "run2"), "--max_steps", "2", "--save_strategy", "no", "--use_cpu", "true")
    training_args.model_init_kwargs = {"dtype": model_args.dtype, "attn_implementation": model_args.attn_implementation}
    rows = load_dataset("json", data_files=dataset_args.datasets[0].data_files, split="train")
    callback = VramplanCallback(db=root / "store.db")
    trainer = SFTTrainer(model=model_args.model_name_or_path, args=training_args, train_dataset=rows,
                         peft_config=trl.get_peft_config(model_args), callbacks=[callback])
    trainer.train()
    with Store.open(root / "store.db") as store:
        (record,) = store.runs()
    assert record.id == callback.record_id and record.environment["trainer"]["kind"] == "hf trainer callback"
    config = record.run_config
    assert (config["method"], config["rank"], config["seq_len"], config["precision"]) == ("lora", planned["rank"], 64, planned["precision"])
    assert record.peak_allocated_bytes > 0 and record.est_peak_allocated_bytes > 0
