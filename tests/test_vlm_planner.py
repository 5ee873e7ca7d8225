"""VLM planning: config reading, image tokens, stages and components (tiny configs, no torch build)."""

import pytest

from vramplan.calibrate.vlm_build import VLM_PROBE_MODELS
from vramplan.planner.catalog import resolve_model
from vramplan.planner.catalog.vlm_models import VLM_CONFIGS
from vramplan.planner.errors import ConfigError, UnknownModelError
from vramplan.planner.specs import RunConfig
from vramplan.planner.vision import vlm_spec_for, vlm_spec_from_config
from vramplan.planner.vision.run import VlmRun
from vramplan.planner.vision.tokens import parse_image_size, smart_resize
from vramplan.planner.vlm_estimate import estimate_schedule, estimate_vlm, image_plan

# published totals (notes/vlm.md §3: meta-device builds with transformers 5.24)
PUBLISHED = {
    "Qwen/Qwen2-VL-2B-Instruct": 2_208_985_600,
    "Qwen/Qwen2-VL-7B-Instruct": 8_291_375_616,
    "Qwen/Qwen2.5-VL-3B-Instruct": 3_754_622_976,
    "Qwen/Qwen2.5-VL-7B-Instruct": 8_292_166_656,
    "llava-hf/llava-1.5-7b-hf": 7_063_427_072,
    "llava-hf/llava-v1.6-mistral-7b-hf": 7_566_747_648,
}


def _spec(hub_id):
    entry = VLM_CONFIGS[hub_id]
    return vlm_spec_from_config(entry["config"], hub_id, entry.get("processor"))


@pytest.mark.parametrize("hub_id", sorted(PUBLISHED))
def test_catalog_counts_match_published(hub_id):
    spec = _spec(hub_id)
    assert spec.params == PUBLISHED[hub_id]
    assert spec.model.base_params == PUBLISHED[hub_id]  # the ModelSpec with vision and projector components


def test_qwen2_vl_width_trap():
    spec = _spec("Qwen/Qwen2-VL-7B-Instruct")
    assert spec.vision.width == 1280 and spec.decoder.hidden_size == 3584  # embed_dim is the ViT's, hidden_size the LLM's
    assert spec.projector.linears[-1].out_features == 3584
    spec25 = _spec("Qwen/Qwen2.5-VL-7B-Instruct")
    assert spec25.vision.width == 1280 and spec25.projector.linears[-1].out_features == 3584


@pytest.mark.parametrize("size,max_pixels,tokens", [
    ((640, 480), None, 391), ((1280, 720), None, 1196), ((1920, 1080), None, 2691), ((3840, 2160), None, 10549),
    ((1920, 1080), 1_003_520, 1222), ((1280, 720), 768 * 768, 720),
])
def test_qwen2_vl_tokens_follow_smart_resize(size, max_pixels, tokens):
    spec = _spec("Qwen/Qwen2-VL-7B-Instruct")
    got = spec.family.image_tokens(spec, *size, max_pixels)
    assert got.llm == tokens + 2  # + <|vision_start|>, <|vision_end|>
    assert got.vit == 4 * tokens  # the ViT runs before the 2x2 merge


def test_llava_is_576_whatever_the_image():
    spec = _spec("llava-hf/llava-1.5-7b-hf")
    for size in ((336, 336), (1920, 1080), (100, 800)):
        t = spec.family.image_tokens(spec, *size, None)
        assert (t.llm, t.vit) == (576, 577)


def test_llava_next_max_grid():
    spec = _spec("llava-hf/llava-v1.6-mistral-7b-hf")
    assert spec.family.image_tokens(spec, 672, 672, None).llm == 2928  # 576 + 48x48 + 48 newlines


def test_smart_resize_and_size_parsing():
    assert smart_resize(480, 640, 28, 3136, 12845056) == (476, 644)
    assert parse_image_size("1280x720") == (1280, 720)
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        parse_image_size("big")


def test_images_longer_than_seq_len_is_an_error():
    spec = _spec("Qwen/Qwen2-VL-7B-Instruct")
    with pytest.raises(ConfigError, match="--seq-len 2048 is the whole sequence"):
        image_plan(spec, RunConfig(seq_len=2048), VlmRun(images=1, image_sizes=((1920, 1080),)))


def test_stage_1_trains_the_projector_only_yet_keeps_llm_activations():
    spec = _spec("Qwen/Qwen2-VL-2B-Instruct")
    run = RunConfig(method="qlora", rank=64, batch=2, seq_len=2048)
    s1, s2 = estimate_schedule(spec, run, VlmRun(image_sizes=((448, 448),)))
    assert s1.trainable == {"vision": 0, "projector": spec.projector.params, "llm": 0}
    assert s2.trainable["llm"] > 0 and s2.trainable["projector"] == spec.projector.params
    terms1 = s1.breakdown.by_name()
    assert terms1["llm/activations/checkpoint_inputs"] > 0 and "llm/weights/adapter" not in terms1
    assert s2.breakdown.peak_allocated_bytes > s1.breakdown.peak_allocated_bytes


def test_checkpointing_pulls_the_frozen_tower_into_autograd():
    spec = _spec("Qwen/Qwen2-VL-2B-Instruct")
    on = estimate_vlm(spec, RunConfig(method="lora", grad_ckpt=True), VlmRun(image_sizes=((896, 896),)))
    off = estimate_vlm(spec, RunConfig(method="lora", grad_ckpt=False), VlmRun(image_sizes=((896, 896),)))
    assert on.breakdown.by_name()["vision/checkpoint_inputs"] > 0
    assert not any(name.startswith("vision/activations") or name.startswith("vision/checkpoint") for name in off.breakdown.by_name())


def test_qlora_upcasts_vision_and_projector_unless_quantize_vision():
    spec = _spec("Qwen/Qwen2-VL-7B-Instruct")
    run = RunConfig(method="qlora")
    plain = estimate_vlm(spec, run, VlmRun()).breakdown.by_name()
    assert plain["vision/weights"] == 4 * spec.vision.params  # prepare_model_for_kbit_training: fp32
    assert plain["projector/weights"] == 4 * spec.projector.params
    quantized = estimate_vlm(spec, run, VlmRun(quantize_vision=True)).breakdown.by_name()
    assert quantized["vision/weights"] < plain["vision/weights"] / 6


def test_components_account_for_every_term():
    spec = _spec("llava-hf/llava-1.5-7b-hf")
    est = estimate_vlm(spec, RunConfig(method="lora"), VlmRun())
    parts = est.components()
    assert set(parts) == {"vision", "projector", "llm"}
    assert parts["vision"]["params"] == 303_507_456 and parts["projector"]["trainable_params"] == 20_979_712
    assert all(name.startswith(("vision/", "projector/", "llm/", "optimizer/", "overhead/")) for name in est.breakdown.by_name())


def test_bad_configs_name_what_is_missing():
    with pytest.raises(UnknownModelError, match="has no 'num_attention_heads'"):
        vlm_spec_from_config({"model_type": "qwen2_vl", "hidden_size": 8}, "broken")
    with pytest.raises(UnknownModelError, match="has no 'vision_config'"):
        vlm_spec_from_config({"model_type": "qwen2_vl", **VLM_PROBE_MODELS["probe-qwen2-vl"], "vision_config": None}, "broken")
    with pytest.raises(UnknownModelError, match="not supported; supported: qwen2_vl"):
        vlm_spec_from_config({"model_type": "blip-2", "vision_config": {}}, "m")  # not a planned family
    with pytest.raises(UnknownModelError, match="text-only model"):
        vlm_spec_for(resolve_model("8b"))


def test_vlm_run_validates():
    with pytest.raises(ConfigError, match="--stage 3"):
        VlmRun(stage=3)
    with pytest.raises(ConfigError, match="--quantize-vision needs a frozen vision tower"):
        VlmRun(vision="lora", quantize_vision=True)


def test_probe_configs_read():
    for name, config in VLM_PROBE_MODELS.items():
        assert vlm_spec_from_config(config, name).params > 0
