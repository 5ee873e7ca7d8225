"""The bundled trainer (`vramplan run`): data, training, checkpoints/resume, OOM fallback, bad input.

Everything runs on CPU on a tiny llama (hidden 64, 2 layers) with a word-level tokenizer made
here, whose vocabulary is the test data's words.
"""

import json
import random

import pytest
import torch
from click.testing import CliRunner

import vramplan.run_cmd  # noqa: F401  (registers `run` until cli.py imports it)
from vramplan.calibrate.store import Store
from vramplan.calibrate.trainer import checkpoint as ckpt
from vramplan.calibrate.trainer.data import IGNORE, load_dataset
from vramplan.calibrate.trainer.fallback import DoesNotFitError, check_fits
from vramplan.calibrate.trainer.loop import TrainConfig, TrainingInterrupted, TrainingOutOfMemory, next_config_down, train
from vramplan.cli import cli
from vramplan.planner.catalog import catalog_spec, custom_gpu
from vramplan.planner.specs import RunConfig
from vramplan.planner.plan_file import write_plan

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]
WORDS = [str(i) for i in range(40)] + ["count", "from", ":", "###", "Instruction:", "Input:", "Response:", "User:", "Assistant:", "System:"]
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
# what every test run shares (a resumed run must match the checkpoint's settings)
RUN = dict(method="lora", rank=8, seq_len=64, batch=4, precision="fp32", grad_ckpt=False, dropout=0.0)
RUN_FLAGS = ["--method", "lora", "--rank", "8", "--seq-len", "64", "--batch", "4", "--precision", "fp32", "--no-grad-ckpt", "--dropout", "0"]


def make_rows(n=60, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        start = rng.randint(0, 20)
        answer = " ".join(str(start + k) for k in range(5))
        if i % 3 == 0:
            rows.append({"instruction": f"count from {start}", "output": answer})
        elif i % 3 == 1:
            rows.append({"messages": [{"role": "user", "content": f"count from {start}"}, {"role": "assistant", "content": answer}]})
        else:
            rows.append({"text": f"count from {start} : {answer}"})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def make_tokenizer(chat_template=TEMPLATE):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    fast.chat_template = chat_template
    return fast


def tiny_llama_config(vocab_size):
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=vocab_size, max_position_embeddings=256, tie_word_embeddings=False,
    )


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A model directory with weights, one with config.json only, both with the tokenizer; the data."""
    from transformers import LlamaForCausalLM

    root = tmp_path_factory.mktemp("trainer")
    tokenizer = make_tokenizer()
    config = tiny_llama_config(len(tokenizer))
    torch.manual_seed(0)
    weights = root / "model"
    LlamaForCausalLM(config).save_pretrained(weights)
    tokenizer.save_pretrained(weights)
    random_init = root / "config-only"
    config.save_pretrained(random_init)
    tokenizer.save_pretrained(random_init)
    data = write_jsonl(root / "train.jsonl", make_rows())
    return {"root": root, "model": weights, "config_only": random_init, "data": data, "tokenizer": tokenizer}


def train_config(tiny, out, db, **changes):
    values = dict(model_path=tiny["model"], data_path=tiny["data"], out_dir=out, run=RunConfig(**RUN), learning_rate=1e-2,
                  max_steps=6, db=db, progress=False, log=lambda message: None)
    values.update(changes)
    return TrainConfig(**values)


def cli_run(*args):
    return CliRunner().invoke(cli, ["run", *map(str, args)])


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert lines, result.output
    assert "Traceback" not in result.output
    return lines[-1]


# ---------------------------------------------------------------- data
def test_prompts_are_masked_in_every_row_shape(tiny, tmp_path):
    tok = tiny["tokenizer"]
    data = write_jsonl(tmp_path / "d.jsonl", [
        {"instruction": "count from 3", "output": "3 4 5"},
        {"messages": [{"role": "user", "content": "count from 7"}, {"role": "assistant", "content": "7 8"}]},
        {"text": "count from 1 : 1 2"},
    ])
    ds = load_dataset(data, tok, seq_len=64, eval_fraction=0)
    trained = [[tok.convert_ids_to_tokens(t) for t in e.labels if t != IGNORE] for e in ds.train]
    assert trained[0] == ["3", "4", "5", "<|end|>"]  # chat template: the answer and its end-of-turn
    assert trained[1] == ["7", "8", "<|end|>"]
    assert trained[2] == ["count", "from", "1", ":", "1", "2", "</s>"]  # raw text: all of it, plus EOS
    assert ds.chat_template

    plain = make_tokenizer(chat_template=None)
    first = load_dataset(data, plain, seq_len=64, eval_fraction=0).train[0]
    prompt = [plain.convert_ids_to_tokens(t) for t, label in zip(first.input_ids, first.labels) if label == IGNORE]
    assert prompt == ["###", "Instruction:", "count", "from", "3", "###", "Response:"]

    short = load_dataset(data, tok, seq_len=6, eval_fraction=0)
    assert (short.truncated, short.no_target) == (3, 2)  # both answers start after token 6: dropped
    assert [len(e.input_ids) for e in short.train] == [6]


def test_eval_split_and_skipped_rows(tiny, tmp_path):
    lines = [json.dumps(row) for row in make_rows(20)]
    lines[4:4] = ["{broken", json.dumps({"prompt": "unknown shape"})]
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(lines) + "\n\n")
    ds = load_dataset(data, tiny["tokenizer"], seq_len=64, skip_bad_rows=True)
    assert (ds.rows, ds.skipped, len(ds.train), len(ds.eval)) == (22, 2, 19, 1)
    assert ds.skip_messages[0].startswith(f"{data}:5: not valid JSON")
    assert ds.skip_messages[1] == f"{data}:6: expected 'messages' (chat), 'instruction' + 'output', or 'text'; found keys prompt"


# ---------------------------------------------------------------- fitting and OOM fallback
def test_next_config_down_known_cases():
    run = RunConfig(method="qlora", batch=4, grad_ckpt=False, seq_len=2048)
    down, accum, reason = next_config_down(run, 2)
    assert (down.batch, accum) == (2, 4) and "same effective batch 8" in reason
    down, accum, _ = next_config_down(RunConfig(batch=3), 1)
    assert (down.batch, accum) == (1, 3)  # keeps the effective batch exact
    down, accum, reason = next_config_down(RunConfig(batch=1, grad_ckpt=False), 8)
    assert down.grad_ckpt and accum == 8 and reason.startswith("--grad-ckpt")
    down, accum, reason = next_config_down(RunConfig(batch=1, grad_ckpt=True, seq_len=2048), 8)
    assert down.seq_len == 1024 and accum == 8 and reason.startswith("--seq-len 1024")
    assert next_config_down(RunConfig(batch=1, grad_ckpt=True, seq_len=128), 8) is None


def test_estimate_refuses_what_does_not_fit():
    spec = catalog_spec("meta-llama/Meta-Llama-3-8B")
    t4 = custom_gpu(15 * 2**30, bf16=False)
    full = RunConfig(method="full", precision="fp16")
    with pytest.raises(DoesNotFitError, match=r"^estimated 79.04 GiB does not fit custom GPU \(15.0 GiB\), and nothing smaller fits"):
        check_fits(spec, full, 1, t4)
    qlora = RunConfig(method="qlora", precision="fp16", batch=8, seq_len=2048)
    with pytest.raises(DoesNotFitError, match=r"; try --batch 4 --grad-accum 2 \(half the micro-batch, same effective batch 8\), or pass --auto-fallback"):
        check_fits(spec, qlora, 1, t4)
    assert "starting anyway (--force)" in check_fits(spec, full, 1, t4, force=True)[2][0]
    lora = RunConfig(method="qlora", precision="fp16", batch=16, seq_len=4096, grad_ckpt=False)
    run, accum, notes = check_fits(spec, lora, 1, t4, auto_fallback=True)
    assert run.batch * accum == 16 and notes and all("stepping down" in note for note in notes)
    assert check_fits(spec, lora, 1, None) == (lora, 1, [])  # CPU: no capacity to check


def test_oom_is_recorded_and_falls_back(tiny, tmp_path, oom_above_batch):
    oom_above_batch(2)
    db = tmp_path / "runs.db"
    with pytest.raises(TrainingOutOfMemory, match=r"out of memory at step 1 .*try --batch 2 --grad-accum 2 "):
        train(train_config(tiny, tmp_path / "no-fallback", db, max_steps=2))
    result = train(train_config(tiny, tmp_path / "fallback", db, max_steps=2, auto_fallback=True))
    assert (result.run.batch, result.grad_accum, result.steps) == (2, 2, 2)
    assert [r.outcome for r in Store.open(db).runs()] == ["oom", "oom", "ok"]
    assert json.loads((tmp_path / "fallback" / ckpt.MARKER).read_text())["fallbacks"] == [
        "out of memory: retried with --batch 2 --grad-accum 2 (half the micro-batch, same effective batch 4)"
    ]


# ---------------------------------------------------------------- training
@pytest.mark.slow
def test_training_lowers_loss_saves_adapter_and_records(tiny, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    db = tmp_path / "runs.db"
    result = train(train_config(tiny, tmp_path / "out", db, max_steps=30, save_every=10, merge=True))
    losses = result.losses
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, losses
    assert result.eval_loss is not None and result.tokens_per_s > 0 and not result.random_init
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path / "out")] == ["step-000020", "step-000030"]

    saved = load_file(result.weights_dir / "adapter_model.safetensors")
    base = AutoModelForCausalLM.from_pretrained(tiny["model"])
    ids = torch.tensor([[7, 8, 9, 10]])
    before = base(ids).logits
    model = PeftModel.from_pretrained(base, result.weights_dir)
    loaded = {k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_" in k}
    assert saved and all(torch.equal(loaded[k], v) for k, v in saved.items())
    assert not torch.allclose(model(ids).logits, before)
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    assert torch.allclose(merged(ids).logits, model(ids).logits, atol=1e-4)

    (record,) = Store.open(db).runs()
    assert (record.source, record.outcome, record.device_name) == ("cpu", "ok", "cpu")
    assert record.run_config["method"] == "lora" and record.peak_allocated_bytes > 0 and record.est_peak_allocated_bytes > 0
    trainer = record.environment["trainer"]
    assert trainer["steps"] == 30 and len(trainer["loss_curve"]) == 30 and trainer["tokens_per_s"] > 0
    assert "LiveTensorTracker" in trainer["statistic"] and set(record.phases) == {"forward", "backward", "optimizer"}


@pytest.mark.slow
def test_interrupt_saves_a_checkpoint_and_resume_continues(tiny, tmp_path):
    out, db = tmp_path / "out", tmp_path / "runs.db"

    def ctrl_c(step, loss):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match=r"interrupted at step 3 of 6; checkpoint saved in .*step-000003: continue with --resume"):
        train(train_config(tiny, out, db, step_callback=ctrl_c))
    (record,) = Store.open(db).runs()
    assert (record.outcome, record.error_message) == ("error", "interrupted")
    assert json.loads((out / ckpt.MARKER).read_text())["status"] == "interrupted"

    args = ["--model", tiny["model"], "--data", tiny["data"], "--out", out, "--db", db, "--max-steps", 6, "--lr", "0.01", *RUN_FLAGS]
    result = cli_run(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.output and "step-000003 (step 3)" in result.output
    assert "trained steps 3 -> 6 of 6" in result.output
    first, second = Store.open(db).runs()
    assert second.outcome == "ok" and second.environment["trainer"]["start_step"] == 3
    straight = train(train_config(tiny, tmp_path / "straight", tmp_path / "other.db"))
    resumed = [loss for _, loss in second.environment["trainer"]["loss_curve"]]  # spans both sessions
    assert resumed == pytest.approx(straight.losses, abs=1e-4)  # same data order, weights, optimizer, schedule

    changed = cli_run(*args, "--resume", "--rank", "4")
    assert error_line(changed).startswith(f"Error: --resume {out}: not the same run: rank 4 (the run has 8)")


@pytest.mark.slow
def test_cli_plan_with_random_init_model(tiny, tmp_path):
    plan = tmp_path / "plan.yaml"
    config = {  # the shape `vramplan recommend --out` writes
        "method": "lora", "rank": 4, "alpha": 8.0, "use_rslora": True, "dropout": None, "targets": ["q_proj", "v_proj"],
        "target_preset": "q,v", "batch": 2, "grad_accum": 2, "grad_ckpt": False, "optimizer": "adamw", "precision": "fp32",
        "seq_len": 64, "learning_rate": 1e-3, "epochs": 1, "lr_scheduler": "cosine", "warmup_ratio": 0.03,
    }
    write_plan(plan, {"model": "config-only", "gpu": None, "goal": "quality", "config": config, "reasons": []})
    out, db = tmp_path / "out", tmp_path / "runs.db"
    result = cli_run("--apply-recommendation", "--plan", plan, "--model", tiny["config_only"], "--data", tiny["data"],
                     "--out", out, "--db", db, "--max-steps", 2, "--rank", 8, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "note: --rank 8 overrides the plan's rank 4" in result.output
    assert "training from random weights (config.json only)" in result.output
    assert "trained steps 0 -> 2 of 2 (lora, batch 2 x 2, seq-len 64)" in result.output
    (record,) = Store.open(db).runs()
    assert (record.run_config["rank"], record.run_config["alpha"], record.run_config["targets"]) == (8, 8.0, ["q", "v"])
    assert record.environment["trainer"]["grad_accum"] == 2 and record.environment["trainer"]["random_init"]
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["use_rslora"] and sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]


# ---------------------------------------------------------------- bad input, one line each
def test_malformed_line_names_file_and_line(tiny, tmp_path):
    data = tmp_path / "bad.jsonl"
    rows = [json.dumps(row) for row in make_rows(4)]
    data.write_text("\n".join(rows[:2] + ["not json"] + rows[2:]) + "\n")
    result = cli_run("--model", tiny["model"], "--data", data, "--out", tmp_path / "out", "--db", tmp_path / "db")
    assert error_line(result) == f"Error: {data}:3: not valid JSON (Expecting value at column 1); fix the line or pass --skip-bad-rows"
    assert not (tmp_path / "out").exists()


def test_empty_dataset(tiny, tmp_path):
    data = tmp_path / "empty.jsonl"
    data.write_text("\n  \n")
    result = cli_run("--model", tiny["model"], "--data", data, "--out", tmp_path / "out")
    assert error_line(result) == f"Error: {data} is empty: it needs at least one JSON row with 'messages' (chat), 'instruction' + 'output', or 'text'"


def test_model_dir_without_tokenizer(tiny, tmp_path):
    bare = tmp_path / "bare"
    tiny_llama_config(64).save_pretrained(bare)
    result = cli_run("--model", bare, "--data", tiny["data"], "--out", tmp_path / "out")
    assert error_line(result).startswith(f"Error: {bare} has no tokenizer (none of tokenizer.json, tokenizer.model,")
    no_config = tmp_path / "no-config"
    tiny["tokenizer"].save_pretrained(no_config)
    result = cli_run("--model", no_config, "--data", tiny["data"])
    assert error_line(result) == f"Error: --model {no_config} has no config.json; `vramplan run` trains a local model directory (config.json, tokenizer, *.safetensors)"
    missing = cli_run("--model", tmp_path / "nowhere", "--data", tiny["data"])
    assert "not a directory" in error_line(missing)


def test_output_dir_that_holds_a_run(tiny, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    ckpt.write_marker(out, {"status": "finished", "step": 5})
    result = cli_run("--model", tiny["model"], "--data", tiny["data"], "--out", out, *RUN_FLAGS)
    assert error_line(result) == f"Error: --out {out} already holds a run (status finished, step 5): pass --resume to continue it, or another --out for a new run"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    result = cli_run("--model", tiny["model"], "--data", tiny["data"], "--out", other, *RUN_FLAGS)
    assert "is not empty and holds no vramplan run" in error_line(result)


def test_plan_for_another_model_or_gpu(tiny, tmp_path):
    plan = tmp_path / "plan.json"
    write_plan(plan, {"model": "meta-llama/Meta-Llama-3-8B", "gpu": None, "config": {"method": "lora"}})
    result = cli_run("--apply-recommendation", "--plan", plan, "--model", tiny["model"], "--data", tiny["data"])
    assert error_line(result) == (
        f"Error: --plan {plan}: it was made for model 'meta-llama/Meta-Llama-3-8B', not {tiny['model']}; "
        "make a plan for this setup, or pass --force to use it anyway"
    )
    t4 = {"name": "NVIDIA Tesla T4", "key": "t4", "total_bytes": 15_828_320_256}
    write_plan(plan, {"model": str(tiny["model"]), "gpu": t4, "config": {"method": "lora"}})
    result = cli_run("--plan", plan, "--model", tiny["model"], "--data", tiny["data"], "--gpu", "l4")
    assert "it was made for NVIDIA Tesla T4, not NVIDIA L4" in error_line(result)
    result = cli_run("--plan", plan, "--model", tiny["model"], "--data", tiny["data"])
    assert "it was made for NVIDIA Tesla T4 but no GPU is given (--gpu) or visible" in error_line(result)
    write_plan(plan, {"model": "model", "gpu": None, "config": {"method": "lora", "lr_scheduler": "linear"}})
    result = cli_run("--plan", plan, "--model", tiny["model"], "--data", tiny["data"])
    assert error_line(result) == f"Error: --plan {plan}: lr_scheduler 'linear': the bundled trainer runs a cosine schedule only"
