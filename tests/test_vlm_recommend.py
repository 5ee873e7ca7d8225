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

STAGE_1 = VlmStagePlan(stage=1, run=RunConfig(method="full", batch=4, seq_len=1024),
                       vlm=VlmRun(stage=1, image_sizes=((448, 448),), max_pixels=200704),
                       learning_rate=1e-3, projector_lr=None, vision_lr_scale=0.0)
STAGE_2 = VlmStagePlan(stage=2, run=RunConfig(method="lora", rank=16, alpha=32.0, batch=2, seq_len=1024),
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
