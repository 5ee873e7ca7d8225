"""Trainable parameter counts equal PEFT's on the meta-built model, per family, stage and target choice."""

import pytest

from vramplan.calibrate.vlm_build import VLM_PROBE_MODELS, build_vlm, trainable_by_component
from vramplan.planner.specs import RunConfig
from vramplan.planner.vision import vlm_spec_from_config
from vramplan.planner.vision.run import VlmRun
from vramplan.planner.vlm_estimate import estimate_vlm

CASES = [
    ("lora", ("all-linear",), VlmRun(stage=1)),
    ("lora", ("all-linear",), VlmRun(stage=2)),
    ("qlora", ("q", "v"), VlmRun(stage=2)),
    ("dora", ("attention",), VlmRun(stage=2, projector="freeze")),
    ("lora", ("mlp",), VlmRun(stage=2, vision="lora")),
    ("full", ("all-linear",), VlmRun(stage=2, vision="full")),
    ("qlora", ("all-linear",), VlmRun(stage=2, quantize_vision=True)),
]


@pytest.mark.parametrize("model", sorted(VLM_PROBE_MODELS))
@pytest.mark.parametrize("method,targets,vlm", CASES)
def test_trainable_counts_equal_peft_on_meta(model, method, targets, vlm):
    config = VLM_PROBE_MODELS[model]
    run = RunConfig(method=method, targets=targets, rank=8, device_kind="cpu", seq_len=1024)
    built = build_vlm(config, run, vlm, meta=True)
    measured = trainable_by_component(built, config["model_type"])
    estimated = estimate_vlm(vlm_spec_from_config(config, model), run, vlm).trainable
    assert measured == estimated
