"""`vramplan run` for VLMs on CPU: two stages on tiny random-init LLaVA and Qwen2-VL directories."""

import json
import sqlite3

import pytest
import torch
from click.testing import CliRunner

from vramplan.calibrate.trainer.checkpoint import STATE_FILE, checkpoint_dirs
from vramplan.calibrate.trainer.vlm_weights import COMPONENTS_FILE, load_for_inference
from vramplan.calibrate.vlm_model_dir import caption_rows, write_tiny_vlm_dir
from vramplan.cli import cli
from vramplan.planner.errors import ConfigError
from vramplan.planner.vision import VLM_FAMILIES
from vramplan.planner.vision.run import VlmRun

pytestmark = pytest.mark.usefixtures("one_thread")
SEQ_LEN = {"llava": 300, "qwen2_vl": 64}  # LLaVA: 256 image tokens per image
STEPS = 16


def cli_run(*args):
    return CliRunner().invoke(cli, ["run", *map(str, args)])


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert lines, result.output
    assert "Traceback" not in result.output
    return lines[-1]


def rows_of(db):
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        return [dict(row) for row in con.execute("SELECT * FROM runs ORDER BY id")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    data = root / "captions.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in caption_rows(24, root / "images")), encoding="utf-8")
    return {"root": root, "data": data, **{family: write_tiny_vlm_dir(root / family, family) for family in SEQ_LEN}}


@pytest.fixture(scope="module", params=sorted(SEQ_LEN))
def two_stage(request, tiny):
    family = request.param
    out, db = tiny["root"] / f"out-{family}", tiny["root"] / f"{family}.db"
    result = cli_run("--schedule", "two-stage", "--model", tiny[family], "--data", tiny["data"], "--out", out, "--db", db,
                     "--max-steps", STEPS, "--seq-len", SEQ_LEN[family], "--batch", 2, "--precision", "fp32", "--save-every", 8, "--no-progress",
                     "--html", tiny["root"] / f"{family}.html")
    assert result.exit_code == 0, result.output
    return {"family": family, "out": out, "db": db, "output": result.output, "model": tiny[family], **tiny}


def test_two_stage_records_both_stages_beside_their_estimates(two_stage):
    rows = rows_of(two_stage["db"])
    assert [(r["outcome"], json.loads(r["run_config"])["vlm"]["stage"]) for r in rows] == [("ok", 1), ("ok", 2)]
    for row in rows:
        error = row["est_peak_allocated_bytes"] / row["peak_allocated_bytes"] - 1
        assert abs(error) < 0.05, (two_stage["family"], row["id"], error)
        losses = [loss for _, loss in json.loads(row["environment"])["trainer"]["loss_curve"]]
        assert len(losses) == STEPS and sum(losses[-4:]) < sum(losses[:4])  # the loss falls in each stage
    assert json.loads(rows[0]["run_config"])["method"] == "lora" and json.loads(rows[1]["run_config"])["rank"] == 16


def test_stage_one_trains_the_projector_and_stage_two_starts_from_it(two_stage):
    from safetensors.torch import load_file

    out = two_stage["out"]
    stage1 = load_file(str(out / "stage-1" / "projector" / COMPONENTS_FILE))
    assert stage1 and all("projector" in name or "merger" in name for name in stage1)
    assert f"initialised {len(stage1)} tensors from {out / 'stage-1' / 'projector'}" in two_stage["output"]
    assert (out / "stage-2" / "adapter" / "adapter_model.safetensors").is_file()
    import transformers

    base = getattr(transformers, VLM_FAMILIES[two_stage["family"]].torch_class).from_pretrained(str(two_stage["model"]))
    assert any(not torch.equal(tensor, base.get_parameter(name)) for name, tensor in stage1.items())  # it trained


def test_html_page_shows_both_stages(two_stage):
    page = (two_stage["root"] / f"{two_stage['family']}.html").read_text(encoding="utf-8")
    assert "stage 1" in page.lower() and "stage 2" in page.lower()


def test_optimizer_groups_per_component(two_stage):
    state = torch.load(checkpoint_dirs(two_stage["out"] / "stage-2")[-1] / STATE_FILE, weights_only=True)
    groups = {group["component"]: group for group in state["optimizer"]["param_groups"]}
    assert set(groups) == {"projector", "llm"}
    assert groups["llm"]["initial_lr"] == groups["projector"]["initial_lr"] == 2e-4  # stage 2's seed default
    stage1 = torch.load(checkpoint_dirs(two_stage["out"] / "stage-1")[-1] / STATE_FILE, weights_only=True)
    assert [(g["component"], g["initial_lr"]) for g in stage1["optimizer"]["param_groups"]] == [("projector", 1e-3)]


def test_stage_two_output_reloads_and_generates(two_stage):
    from safetensors.torch import load_file

    from vramplan.calibrate.trainer.vlm_data import PLACEHOLDERS, open_image
    from vramplan.calibrate.trainer.vlm_processor import load_processor
    from vramplan.planner.inventory import read_config

    adapter = two_stage["out"] / "stage-2" / "adapter"
    model = load_for_inference(two_stage["model"], adapter)
    saved = load_file(str(adapter / COMPONENTS_FILE))
    for name, tensor in saved.items():
        assert torch.equal(model.get_base_model().get_parameter(name), tensor.float())
    processor = load_processor(two_stage["model"], read_config(two_stage["model"]))
    image = open_image(next((two_stage["root"] / "images").iterdir()))
    inputs = processor(text=[PLACEHOLDERS[two_stage["family"]] + " \n"], images=[image], return_tensors="pt", add_special_tokens=False)
    out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4


def test_resume_skips_a_finished_schedule(two_stage):
    result = cli_run("--schedule", "two-stage", "--model", two_stage["model"], "--data", two_stage["data"], "--out", two_stage["out"],
                     "--db", two_stage["db"], "--max-steps", STEPS, "--seq-len", SEQ_LEN[two_stage["family"]], "--batch", 2,
                     "--precision", "fp32", "--resume", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "stage 1: already finished" in result.output and "stage 2: already finished" in result.output
    assert len(rows_of(two_stage["db"])) == 2


def test_stage_two_alone_from_a_stage_one_output(tiny, tmp_path):
    """--stage 2 --init-from: the stage-1 projector is loaded; QLoRA quantizes only the LLM's decoder Linears."""
    out1, out2, db = tmp_path / "s1", tmp_path / "s2", tmp_path / "db.sqlite"
    common = ["--model", tiny["qwen2_vl"], "--data", tiny["data"], "--db", db, "--max-steps", 2, "--seq-len", 64, "--precision", "fp32", "--no-progress"]
    assert cli_run("--stage", 1, "--out", out1, *common).exit_code == 0
    result = cli_run("--stage", 2, "--init-from", out1, "--method", "qlora", "--projector-lr", 1e-3, "--out", out2, *common)
    assert result.exit_code == 0, result.output
    assert f"initialised 6 tensors from {out1 / 'projector'}" in result.output and "projector lr 0.001" in result.output
    row = rows_of(db)[-1]
    config = json.loads(row["run_config"])
    assert (config["method"], config["vlm"]["stage"]) == ("qlora", 2)
    assert abs(row["est_peak_allocated_bytes"] / row["peak_allocated_bytes"] - 1) < 0.05


def test_run_plan_with_stages(tiny, tmp_path):
    from vramplan.planner.plan_file import VlmStagePlan, plan_document, stage_entry, write_plan
    from vramplan.planner.specs import RunConfig
    from vramplan.planner.vision.run import VlmRun

    run = RunConfig(method="lora", rank=8, seq_len=64, batch=2, precision="fp32", grad_ckpt=False)
    cap = 56 * 56  # a plan's --max-pixels: the processor is capped as the estimate assumes (112x112 -> 56x56, 4 tokens)
    stages = [stage_entry(VlmStagePlan(stage, run, VlmRun(stage=stage, max_pixels=cap), lr, 2e-3 if stage == 2 else None, 0.1), {"epochs": 1})
              for stage, lr in ((1, 1e-3), (2, 2e-4))]
    plan = tmp_path / "plan.json"
    write_plan(plan, plan_document("tiny", None, run, None, training={"epochs": 1}, stages=stages))  # as `recommend --out` writes it
    out, db = tmp_path / "out", tmp_path / "db.sqlite"
    result = cli_run("--plan", plan, "--model", tiny["qwen2_vl"], "--data", tiny["data"], "--out", out, "--db", db, "--max-steps", 2, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "stage 2: projector + lora on the LLM, lr 0.0002, projector lr 0.002" in result.output
    assert f"initialised 6 tensors from {out / 'stage-1' / 'projector'}" in result.output
    rows = rows_of(db)
    assert [(json.loads(r["run_config"])["rank"], json.loads(r["run_config"])["vlm"]["max_pixels"]) for r in rows] == [(8, cap), (8, cap)]
    assert all(abs(r["est_peak_allocated_bytes"] / r["peak_allocated_bytes"] - 1) < 0.05 for r in rows)
    from vramplan.calibrate.trainer.vlm_processor import apply_max_pixels, load_processor
    from vramplan.calibrate.trainer.vlm_data import open_image

    processor = load_processor(tiny["qwen2_vl"], json.loads((tiny["qwen2_vl"] / "config.json").read_text()))
    apply_max_pixels(processor, cap)
    grid = processor.image_processor(images=[open_image(next((tiny["root"] / "images").iterdir()))], return_tensors="pt")["image_grid_thw"]
    assert grid.tolist() == [[1, 4, 4]]


@pytest.mark.parametrize("args,message", [
    (["--schedule", "two-stage", "--init-from", "x"], "Error: --init-from goes with --stage 2"),
    (["--schedule", "two-stage", "--stage", "1"], "Error: give either --stage or --schedule two-stage, not both"),
    (["--stage", "2", "--init-from", "{out}"], "Error: --init-from {out}: no stage-1 output there"),
    (["--stage", "2", "--merge"], "Error: --merge: a VLM stage saves its projector and adapter"),
])
def test_flag_mistakes_are_one_line_errors(tiny, tmp_path, args, message):
    args = [a.replace("{out}", str(tmp_path)) for a in args]
    result = cli_run(*args, "--model", tiny["qwen2_vl"], "--data", tiny["data"], "--out", tmp_path / "o", "--db", tmp_path / "db", "--no-progress")
    assert result.exit_code != 0
    assert error_line(result).startswith(message.replace("{out}", str(tmp_path)))


def test_bad_records_stop_before_anything_is_written(tiny, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"image": "nope.png", "caption": "red"}\n{"caption": 3\n', encoding="utf-8")
    result = cli_run("--stage", 1, "--model", tiny["llava"], "--data", data, "--out", tmp_path / "o", "--db", tmp_path / "db", "--no-progress")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert f"{data}:1: missing image" in result.output and f"{data}:2: malformed JSON" in result.output
    assert not (tmp_path / "o").exists()


def test_vlm_flags_on_a_text_model_are_refused(tmp_path):
    from tests.test_trainer import make_tokenizer, tiny_llama_config

    model = tmp_path / "text"
    tokenizer = make_tokenizer()
    tiny_llama_config(len(tokenizer)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "hello"}\n', encoding="utf-8")
    result = cli_run("--stage", 1, "--model", model, "--data", data, "--out", tmp_path / "o", "--no-progress")
    assert error_line(result).startswith("Error: --stage: only for a vision-language model directory")


def _config(tiny, out, db, **changes):
    from vramplan.calibrate.trainer.vlm_loop import VlmTrainConfig
    from vramplan.planner.specs import RunConfig
    from vramplan.planner.vision.run import VlmRun

    values = dict(model_path=tiny["qwen2_vl"], data_path=tiny["data"], out_dir=out, db=db, max_steps=2, progress=False, log=lambda m: None,
                  run=RunConfig(method="lora", seq_len=64, batch=4, precision="fp32", grad_ckpt=False, dropout=0.0), vlm=VlmRun(stage=1),
                  learning_rate=1e-3)
    return VlmTrainConfig(**{**values, **changes})


def test_oom_falls_back_and_every_attempt_is_recorded(tiny, tmp_path, oom_above_batch):
    from vramplan.calibrate.store import Store
    from vramplan.calibrate.trainer.loop import TrainingOutOfMemory
    from vramplan.calibrate.trainer.vlm_loop import train_vlm

    oom_above_batch(2)
    db = tmp_path / "runs.db"
    with pytest.raises(TrainingOutOfMemory, match=r"try --batch 2 --grad-accum 2 "):
        train_vlm(_config(tiny, tmp_path / "no-fallback", db))
    result = train_vlm(_config(tiny, tmp_path / "fallback", db, auto_fallback=True))
    assert (result.run.batch, result.grad_accum, result.steps) == (2, 2, 2)
    runs = Store.open(db).runs()
    assert [r.outcome for r in runs] == ["oom", "oom", "ok"] and all(r.run_config["vlm"]["stage"] == 1 for r in runs)


def test_interrupted_stage_resumes_from_its_checkpoint(tiny, tmp_path):
    from vramplan.calibrate.trainer.loop import TrainingInterrupted
    from vramplan.calibrate.trainer.vlm_loop import train_vlm

    def stop(step, loss):
        if step == 2:
            raise KeyboardInterrupt

    out, db = tmp_path / "out", tmp_path / "runs.db"
    with pytest.raises(TrainingInterrupted, match="at step 2 of 3"):
        train_vlm(_config(tiny, out, db, max_steps=3, step_callback=stop))
    result = train_vlm(_config(tiny, out, db, max_steps=3, resume=True))
    assert (result.start_step, result.steps, len(result.losses)) == (2, 3, 3)
    with pytest.raises(ConfigError, match="holds a stage-1 run, not stage 2"):
        train_vlm(_config(tiny, out, db, max_steps=3, resume=True, vlm=VlmRun(stage=2)))


def test_vision_lora_trains_at_its_scaled_lr(tiny, tmp_path):
    from vramplan.calibrate.store import Store
    from vramplan.calibrate.trainer.vlm_loop import train_vlm

    out, db = tmp_path / "out", tmp_path / "runs.db"
    train_vlm(_config(tiny, out, db, max_steps=2, vlm=VlmRun(stage=2, vision="lora"), learning_rate=2e-4, vision_lr_scale=0.5, projector_lr=1e-3))
    state = torch.load(checkpoint_dirs(out)[-1] / STATE_FILE, weights_only=True)
    lrs = {group["component"]: group["initial_lr"] for group in state["optimizer"]["param_groups"]}
    assert lrs == {"projector": 1e-3, "llm": 2e-4, "vision": 1e-4}
    record = Store.open(db).runs()[-1]
    assert record.run_config["vlm"]["vision"] == "lora"
    assert abs(record.est_peak_allocated_bytes / record.peak_allocated_bytes - 1) < 0.05
