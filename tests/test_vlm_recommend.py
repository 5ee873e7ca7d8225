"""VLM plans: the `stages` contract of plan files (what `run --plan` reads) and `recommend` for VLMs."""

import json

import pytest
from vramplan.planner.errors import ConfigError
from vramplan.planner.plan_file import (
    VlmStagePlan,
    plan_document,
    read_plan,
    read_vlm_stages,
    run_from_plan,
    stage_entry,
    write_plan,
)
from vramplan.planner.specs import RunConfig
from vramplan.planner.vision.run import VlmRun

STAGE_1 = VlmStagePlan(stage=1, run=RunConfig(method="full", batch=4, seq_len=1024, grad_accum=8),
                       vlm=VlmRun(stage=1, image_sizes=((448, 448),), max_pixels=200704),
                       learning_rate=1e-3, projector_lr=None, vision_lr_scale=0.0)
STAGE_2 = VlmStagePlan(stage=2, run=RunConfig(method="lora", rank=16, alpha=32.0, batch=2, seq_len=1024, grad_accum=8),
                       vlm=VlmRun(stage=2, image_sizes=((448, 448),), vision="lora"),
                       learning_rate=2e-4, projector_lr=1e-3, vision_lr_scale=0.1)


def _document(stages=(STAGE_1, STAGE_2)):
    return plan_document("Qwen/Qwen2-VL-7B-Instruct", None, STAGE_2.run, None,
                         training={"grad_accum": 8}, stages=[stage_entry(stage, {"grad_accum": 8}) for stage in stages])


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_both_stages_round_trip_through_a_plan_file(tmp_path, suffix):
    path = tmp_path / f"plan{suffix}"
    write_plan(path, _document())
    plan = read_plan(path)
    assert read_vlm_stages(plan, f"--plan {path}") == [STAGE_1, STAGE_2]
    assert run_from_plan(plan) == STAGE_2.run  # older readers see stage 2
    entry = plan["stages"][0]
    assert set(entry) == {"stage", "config", "vlm", "lr"}
    assert entry["lr"] == {"learning_rate": 1e-3, "projector_lr": None, "vision_lr_scale": 0.0}
    assert entry["config"]["grad_accum"] == 8 and entry["config"]["learning_rate"] == 1e-3
    assert entry["vlm"] == STAGE_1.vlm.as_dict()


def test_a_plan_without_stages_has_none():
    plain = plan_document("m", None, RunConfig(), None)
    assert "stages" not in plain and read_vlm_stages(plain) == []


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["stages"].__setitem__(0, "x"), "stages[0] must be a mapping"),
    (lambda d: d["stages"][1].pop("lr"), "stages[1] has no lr"),
    (lambda d: d["stages"][0].__setitem__("stage", 3), "stages[0].stage must be 1 or 2"),
    (lambda d: d["stages"][1]["lr"].__setitem__("learning_rate", -1), "stages[1].lr.learning_rate must be a positive number"),
    (lambda d: d["stages"][1]["lr"].__setitem__("projector_lr", "fast"), "stages[1].lr.projector_lr must be"),
    (lambda d: d["stages"][0]["config"].pop("method"), "stages[0].config has no method"),
    (lambda d: d["stages"][1].__setitem__("stage", 1), "lists a stage twice"),
    (lambda d: d.__setitem__("stages", []), "stages must be a list"),
])
def test_a_bad_stage_entry_is_named_with_the_file(tmp_path, mutate, message):
    path = tmp_path / "plan.json"
    document = {"vramplan_plan": 1, **_document()}
    mutate(document)
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=f"--plan {path}") as caught:
        read_vlm_stages(read_plan(path), f"--plan {path}")
    assert message in str(caught.value)


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["stages"][0]["vlm"].__setitem__("vision", "melt"), "stages[0].vlm: --vision 'melt' is not one of"),
    (lambda d: d["stages"][0]["vlm"].__setitem__("colour", 1), "stages[0].vlm does not describe"),
    (lambda d: d["stages"][1]["vlm"].__setitem__("stage", 1), "stages[1]: stage 2 but vlm.stage 1"),
    (lambda d: d["stages"][1]["config"].pop("batch"), "stages[1]: config has no batch"),
])
def test_a_stage_that_does_not_build_is_named(mutate, message):
    document = _document()
    mutate(document)
    with pytest.raises(ConfigError) as caught:
        read_vlm_stages(document, "--plan p.json")
    assert str(caught.value).startswith("--plan p.json: ") and message in str(caught.value)


# ---------------------------------------------------------------- `recommend` for a VLM
from click.testing import CliRunner  # noqa: E402

from vramplan.cli import cli  # noqa: E402
from vramplan.planner.catalog import resolve_gpu, resolve_model  # noqa: E402
from vramplan.planner.vision import vlm_spec_for  # noqa: E402
from vramplan.planner.vlm_advisor import ladder, recommend_vlm, scale_row  # noqa: E402

QWEN7 = vlm_spec_for(resolve_model("qwen2-vl-7b"))
AT_448 = VlmRun(image_sizes=((448, 448),))


def _recommend(*args):
    return CliRunner().invoke(cli, ["recommend", *args])


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps at the terminal width


def test_the_issue_command_prints_a_two_stage_plan_with_reasons():
    result = _recommend("--model", "qwen2-vl-7b", "--gpu", "t4", "--dataset-size", "5000", "--image-size", "448x448")
    assert result.exit_code == 0, result.output
    text = _flat(result.output)
    for expected in ("Stage 1: projector warm-up", "Stage 2: projector + LLM", "5,000 examples (1K-10K): LoRA r8-16",
                     "the table's choice (LoRA r16, vision frozen) does not fit one NVIDIA Tesla T4", "258 image tokens",
                     "lr 1e-03", "lr 2e-04", "has no bf16"):
        assert expected in text, expected


def test_json_has_stages_image_tokens_and_components():
    result = _recommend("--model", "qwen2-vl-7b", "--gpu", "t4", "--dataset-size", "5000", "--image-size", "448x448", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["image_tokens"] == 258 and doc["requested_image_tokens"] == 258 and doc["max_pixels"] is None
    assert doc["fit_limit_bytes"] == int(doc["gpu"]["total_bytes"] * 0.95)
    assert set(doc["components"]) == {"vision", "projector", "llm"}
    one, two = doc["stages"]
    assert (one["stage"], two["stage"]) == (1, 2)
    assert one["lr"]["learning_rate"] == 1e-3 and two["lr"]["learning_rate"] == 2e-4
    assert one["vlm"]["vision"] == "freeze" and one["vlm"]["projector"] == "train"
    assert two["config"]["method"] == "qlora" and two["config"]["rank"] == 16  # LoRA r16 needs more than a T4
    for stage in doc["stages"]:
        assert stage["fits"] and stage["device_used_bytes"] <= doc["fit_limit_bytes"]
        assert set(stage["components"]) == {"vision", "projector", "llm"}


@pytest.mark.parametrize("examples,method,rank,vision", [
    (500, "qlora", 4, "freeze"),
    (5_000, "lora", 16, "freeze"),
    (50_000, "lora", 32, "full"),
    (500_000, "full", None, "full"),
])
def test_the_data_scale_table_is_kept_where_it_fits(examples, method, rank, vision):
    advice = recommend_vlm(QWEN7, resolve_gpu("h200"), AT_448, examples)
    two = advice.stages[1].plan
    assert (two.run.method, two.vlm.vision) == (method, vision)
    if rank is not None:
        assert two.run.rank == rank
    assert two.vision_lr_scale == 0.1 and advice.stages[0].plan.learning_rate == 1e-3
    assert not any("does not fit" in reason for reason in advice.reasons)


def test_the_ladder_starts_at_the_table_and_keeps_the_llm_method_longest():
    rungs = ladder(scale_row(50_000))
    assert (rungs[0].method, rungs[0].rank, rungs[0].vision) == ("lora", 32, "full")
    assert [r.vision for r in rungs[:3]] == ["full", "lora", "freeze"]
    assert rungs[-1].quantize_vision and rungs[-1].method == "qlora"
    with pytest.raises(ConfigError, match="chooses among full, lora, qlora"):
        ladder(scale_row(50_000), ("dora",))


def test_big_images_lower_max_pixels_and_say_what_it_costs():
    advice = recommend_vlm(QWEN7, resolve_gpu("t4"), VlmRun(images=2, image_sizes=((3840, 2160),)), 5_000)
    two = advice.stages[1]
    assert two.plan.vlm.max_pixels is not None and advice.stages[0].plan.vlm.max_pixels == two.plan.vlm.max_pixels
    assert two.estimate.plan.llm_tokens < advice.requested_image_tokens
    cost = next(reason for reason in advice.reasons if reason.startswith("--max-pixels"))
    assert f"{two.estimate.plan.llm_tokens:,} image tokens per example instead of {advice.requested_image_tokens:,}" in cost
    assert "fine detail" in cost and "of the pixels gone" in cost
    run = two.plan.run  # only the savers the VLM trainer applies
    assert (run.loss, run.offload_activations, run.kbit_upcast) == ("standard", False, True)


def test_a_family_without_max_pixels_is_never_resized_and_nothing_fits_is_one_line():
    llava = vlm_spec_for(resolve_model("llava-1.5-7b"))
    result = _recommend("--model", "llava-1.5-7b", "--gpu-mem", "3GiB", "--dataset-size", "500")
    assert result.exit_code == 1
    assert result.output.startswith("Error: nothing fits llava-hf/llava-1.5-7b-hf on one") and result.output.count("\n") == 1
    advice = recommend_vlm(llava, resolve_gpu("t4"), VlmRun(images=4), 5_000)
    assert advice.stages[1].plan.vlm.max_pixels is None


def test_out_writes_both_stages_that_read_back(tmp_path):
    path = tmp_path / "plan.json"
    result = _recommend("--model", "qwen2-vl-7b", "--gpu", "l4", "--dataset-size", "50000", "--image-size", "448x448", "--out", str(path))
    assert result.exit_code == 0, result.output
    assert f"plan written to {path}" in _flat(result.output)
    plan = read_plan(path)
    stages = read_vlm_stages(plan, f"--plan {path}")
    advice = recommend_vlm(QWEN7, resolve_gpu("l4"), AT_448, 50_000)
    expected = [stage.plan for stage in advice.stages]
    assert [s.stage for s in stages] == [1, 2]
    assert [(s.vlm, s.learning_rate, s.projector_lr, s.vision_lr_scale) for s in stages] == \
        [(e.vlm, e.learning_rate, e.projector_lr, e.vision_lr_scale) for e in expected]
    assert [s.run for s in stages] == [RunConfig(**{**e.run.__dict__, "alpha": e.run.lora_alpha}) for e in expected]
    assert run_from_plan(plan) == stages[1].run  # top-level config: stage 2
    assert plan["config"]["grad_accum"] == advice.stages[1].grad_accum


@pytest.mark.parametrize("args,message", [
    (("--gpus", "2"), "Error: --gpus 2: the VLM plan is for one GPU; drop --gpus or pick a bigger --gpu"),
    (("--goal", "speed"), "Error: --goal speed: a VLM plan follows the data-scale table (--goal quality); drop --goal"),
    (("--top", "3"), "Error: --top: not for a vision-language model yet;"),
    (("--images", "0"), "Error: --images must be 1 or more for a VLM plan, got 0"),
    (("--method", "dora"), "Error: --method: the VLM advisor chooses among full, lora, qlora; give one of them"),
    (("--image-size", "big"), "Error: --image-size 'big' is not WIDTHxHEIGHT in pixels"),
])
def test_flags_a_vlm_plan_cannot_honour_are_one_line_errors(args, message):
    result = _recommend("--model", "qwen2-vl-7b", "--gpu", "t4", *args)
    assert result.exit_code == 1
    assert result.output.startswith(message), result.output
    assert "Traceback" not in result.output


def test_a_text_model_with_image_flags_is_refused_and_without_them_unchanged():
    refused = _recommend("--model", "8b", "--gpu", "t4", "--image-size", "448x448")
    assert refused.exit_code == 1 and "is a text-only model" in refused.output
    text = json.loads(_recommend("--model", "8b", "--gpu", "t4", "--json").output)
    assert "stages" not in text and text["recommendations"]


def test_a_local_model_directory_brings_its_processors_pixel_cap(tmp_path):
    from vramplan.planner.catalog.vlm_models import VLM_CONFIGS

    folder = tmp_path / "tiny-qwen"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(VLM_CONFIGS["Qwen/Qwen2-VL-2B-Instruct"]["config"]))
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 3136, "longest_edge": 200704}}))
    result = _recommend("--model", str(folder), "--gpu", "a100-80gb", "--dataset-size", "5000", "--image-size", "1344x1344", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["images"][0]["resized"] == [448, 448] and doc["image_tokens"] == 258  # 448 x 448 = 200,704 pixels at most
    assert doc["max_pixels"] is None  # the processor's own cap, not a lowered one
    entry = doc["stages"][1]
    assert "projector_lr" not in entry["config"] and entry["lr"]["projector_lr"] is None  # the lrs live in "lr" only


def test_estimate_plan_estimates_each_stage_as_written(tmp_path):
    path = tmp_path / "plan.json"
    made = json.loads(_recommend("--model", "qwen2-vl-7b", "--gpu", "l4", "--dataset-size", "50000", "--image-size", "672x448",
                                 "--out", str(path), "--json").output)
    result = CliRunner().invoke(cli, ["estimate", "--plan", str(path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["schedule"] == "two-stage" and [e["stage"] for e in doc["estimates"]] == [1, 2]
    assert [e["device_used_bytes"] for e in doc["estimates"]] == [s["device_used_bytes"] for s in made["stages"]]
    assert doc["estimates"][1]["config"]["vision"] == made["stages"][1]["vlm"]["vision"]
    flagged = json.loads(CliRunner().invoke(cli, ["estimate", "--plan", str(path), "--batch", "2", "--json"]).output)
    assert flagged["stage"] == 2 and flagged["estimates"][0]["config"]["batch"] == 2  # a flag goes over stage 2's config
