"""Trainable parameter counts equal PEFT's on the meta-built model, per family, stage and target choice."""

import pytest

from vramplan.calibrate.vlm_build import VLM_PROBE_MODELS, build_vlm, trainable_by_component
from vramplan.planner.specs import RunConfig
from vramplan.planner.vision import vlm_spec_from_config
from vramplan.planner.vision.run import VlmRun
from vramplan.planner.vlm_estimate import estimate_vlm

# a tiny Qwen2.5-VL: its tower's SwiGLU names (gate_proj, up_proj, down_proj) are the LLM's too
QWEN25_VL = {
    **{k: v for k, v in VLM_PROBE_MODELS["probe-qwen2-vl"].items() if k != "vision_config"}, "model_type": "qwen2_5_vl",
    "vision_config": {"depth": 2, "hidden_size": 128, "intermediate_size": 256, "num_heads": 4, "out_hidden_size": 256,
                      "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [1]},
}
TARGET_MODELS = {**VLM_PROBE_MODELS, "tiny-qwen2.5-vl": QWEN25_VL}

CASES = [
    ("lora", ("all-linear",), VlmRun(stage=1)),
    ("lora", ("all-linear",), VlmRun(stage=2)),
    ("qlora", ("q", "v"), VlmRun(stage=2)),
    ("dora", ("attention",), VlmRun(stage=2, projector="freeze")),
    ("lora", ("mlp",), VlmRun(stage=2, vision="lora")),
    ("full", ("all-linear",), VlmRun(stage=2, vision="full")),
    ("qlora", ("all-linear",), VlmRun(stage=2, quantize_vision=True)),
]


@pytest.mark.parametrize("model", sorted(TARGET_MODELS))
@pytest.mark.parametrize("method,targets,vlm", CASES)
def test_trainable_counts_equal_peft_on_meta(model, method, targets, vlm):
    config = TARGET_MODELS[model]
    run = RunConfig(method=method, targets=targets, rank=8, device_kind="cpu", seq_len=1024)
    built = build_vlm(config, run, vlm, meta=True)
    measured = trainable_by_component(built, config["model_type"])
    estimated = estimate_vlm(vlm_spec_from_config(config, model), run, vlm).trainable
    assert measured == estimated



def _peft_wrapped(config: dict, targets) -> dict[str, int]:
    """Linears PEFT wraps on the bare meta model when handed `targets` as they are."""
    import warnings

    import peft
    import torch
    import transformers

    from vramplan.calibrate.vlm_build import component_of
    from vramplan.planner.vision import VLM_FAMILIES

    family = VLM_FAMILIES[config["model_type"]]
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(transformers, family.torch_class)._from_config(transformers.AutoConfig.for_model(**config))
        model = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=targets), low_cpu_mem_usage=True)
    counts = {"vision": 0, "projector": 0, "llm": 0}
    for name, module in model.named_modules():
        if isinstance(module, peft.tuners.lora.LoraLayer):
            counts[component_of(name, config["model_type"])] += 1
    return counts


@pytest.mark.parametrize("model", sorted(TARGET_MODELS))
@pytest.mark.parametrize("targets", [("all-linear",), ("q", "v"), ("mlp",), ("attention", "lm_head")])
def test_target_components_name_what_peft_wraps(model, targets):
    from vramplan.planner.targets import resolve_targets
    from vramplan.planner.vision.target_match import peft_matches

    config = TARGET_MODELS[model]
    spec = vlm_spec_from_config(config, model)
    handed = "all-linear" if targets == ("all-linear",) else list(resolve_targets(spec.decoder, targets))
    assert peft_matches(spec, targets) == _peft_wrapped(config, handed)


def test_default_targets_adapt_the_llm_only_and_say_what_else_matches():
    config = VLM_PROBE_MODELS["probe-llava"]
    spec = vlm_spec_from_config(config, "probe-llava")
    est = estimate_vlm(spec, RunConfig(method="lora", targets=("q", "v"), device_kind="cpu", seq_len=1024), VlmRun(stage=2))
    parts = est.target_components()
    assert parts["vision"] == {"matched_modules": 2 * 3, "adapted_modules": 0}  # CLIP's q_proj and v_proj, 3 blocks
    assert parts["llm"] == {"matched_modules": 2 * 3, "adapted_modules": 2 * 3}
    assert parts["projector"] == {"matched_modules": 0, "adapted_modules": 0}
    lora_tower = estimate_vlm(spec, RunConfig(method="lora", device_kind="cpu", seq_len=1024), VlmRun(stage=1, vision="lora")).target_components()
    assert lora_tower["vision"]["adapted_modules"] == 6 * 3 and lora_tower["llm"]["adapted_modules"] == 0
