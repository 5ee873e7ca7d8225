"""Qwen3-VL: catalog counts, image tokens against the real image processor, DeepStack mergers as
projector, the tower that checkpointing leaves out of autograd, config errors, the CLI."""

import json
import warnings

import pytest
from click.testing import CliRunner

from vramplan.calibrate.vlm_build import VLM_PROBE_MODELS, build_vlm, component_of, trainable_by_component
from vramplan.cli import cli
from vramplan.planner.catalog.vlm_models import VLM_CONFIGS
from vramplan.planner.errors import UnknownModelError
from vramplan.planner.specs import RunConfig
from vramplan.planner.vision import vlm_spec_from_config
from vramplan.planner.vision.run import VlmRun
from vramplan.planner.vlm_estimate import estimate_vlm

PROBE = VLM_PROBE_MODELS["probe-qwen3-vl"]
# published totals (hub model pages), split as the meta-built transformers 5.24 model has them
PUBLISHED = {
    "Qwen/Qwen3-VL-2B-Instruct": (2_127_532_032, 306_242_560, 100_714_496),
    "Qwen/Qwen3-VL-4B-Instruct": (4_437_815_808, 306_242_560, 109_105_152),
    "Qwen/Qwen3-VL-8B-Instruct": (8_767_123_696, 415_891_440, 160_496_896),
}


def _spec(hub_id):
    entry = VLM_CONFIGS[hub_id]
    return vlm_spec_from_config(entry["config"], hub_id, entry.get("processor"))


def _meta_model(config):
    import torch
    import transformers

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.Qwen3VLForConditionalGeneration._from_config(transformers.AutoConfig.for_model(**config))


@pytest.mark.parametrize("hub_id", sorted(PUBLISHED))
def test_catalog_counts_match_published_and_the_meta_build(hub_id):
    total, vision, projector = PUBLISHED[hub_id]
    spec = _spec(hub_id)
    assert (spec.params, spec.vision.params, spec.projector.params) == (total, vision, projector)
    assert spec.decoder.model_type == "qwen3" and spec.decoder.qk_norm  # the Qwen3 decoder, q/k norms per head
    assert spec.decoder.tie_embeddings == (hub_id != "Qwen/Qwen3-VL-8B-Instruct")  # 2B and 4B tie, 8B has an lm_head


def test_probe_components_equal_the_torch_model():
    model = _meta_model(PROBE)
    counts = {"vision": 0, "projector": 0, "llm": 0}
    for name, p in model.named_parameters():
        counts[component_of(name, "qwen3_vl")] += p.numel()
    spec = vlm_spec_from_config(PROBE, "probe-qwen3-vl")
    assert counts == {"vision": spec.vision.params, "projector": spec.projector.params, "llm": spec.decoder.base_params}
    # the DeepStack mergers (one per tapped block) are projector: they train in stage 1 with the merger
    assert any(name.startswith("model.visual.deepstack_merger_list.1.") for name, _ in model.named_parameters())
    assert spec.projector.branches == 1 + len(PROBE["vision_config"]["deepstack_visual_indexes"])


@pytest.mark.parametrize("size", [(640, 480), (1280, 720), (224, 224), (100, 900), (3000, 2000), (1344, 1008)])
@pytest.mark.parametrize("max_pixels", [None, 1_003_520])
def test_tokens_follow_the_image_processor(size, max_pixels):
    """16-px patches and a 2x2 merge: multiples of 32, within the checkpoints' 65,536..16,777,216 pixels."""
    import numpy as np
    import transformers
    from PIL import Image

    spec = _spec("Qwen/Qwen3-VL-8B-Instruct")
    processor = transformers.Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, temporal_patch_size=2,
        size={"shortest_edge": 65_536, "longest_edge": max_pixels or 16_777_216})
    image = Image.fromarray(np.zeros((size[1], size[0], 3), dtype=np.uint8))
    _, h, w = processor(images=[image], return_tensors="pt")["image_grid_thw"][0].tolist()
    got = spec.family.image_tokens(spec, *size, max_pixels)
    assert got.vit == h * w and got.llm == h * w // 4 + 2  # + <|vision_start|>, <|vision_end|>
    assert got.resized[0] % 32 == 0 and got.resized[1] % 32 == 0


def test_the_vision_model_exposes_no_input_embeddings():
    """The premise of `vision_hooked=False`: enable_input_require_grads() skips a sub-model whose
    get_input_embeddings raises, so under checkpointing the frozen tower saves nothing."""
    model = _meta_model(PROBE)
    with pytest.raises(NotImplementedError):
        model.model.visual.get_input_embeddings()
    spec = vlm_spec_from_config(PROBE, "probe-qwen3-vl")
    on = estimate_vlm(spec, RunConfig(method="lora", grad_ckpt=True, device_kind="cpu", seq_len=1024), VlmRun(image_sizes=((640, 480),))).breakdown.by_name()
    assert not any(name.startswith(("vision/activations", "vision/checkpoint", "vision/stem")) for name in on)
    lora = estimate_vlm(spec, RunConfig(method="lora", grad_ckpt=True, device_kind="cpu", seq_len=1024), VlmRun(vision="lora", image_sizes=((640, 480),)))
    assert lora.breakdown.by_name()["vision/checkpoint_inputs"] > 0  # a trained tower is in the graph all the same


@pytest.mark.parametrize("method,vlm", [
    ("lora", VlmRun(stage=1)), ("qlora", VlmRun(stage=2)), ("lora", VlmRun(stage=2, vision="lora")),
    ("qlora", VlmRun(stage=2, quantize_vision=True)),
])
def test_trainable_counts_equal_peft_on_meta(method, vlm):
    run = RunConfig(method=method, targets=("all-linear",), rank=8, device_kind="cpu", seq_len=1024)
    built = build_vlm(PROBE, run, vlm, meta=True)
    assert trainable_by_component(built, "qwen3_vl") == estimate_vlm(vlm_spec_from_config(PROBE, "p"), run, vlm).trainable


def test_bad_configs_name_what_is_missing():
    no_text = {k: v for k, v in PROBE.items() if k != "text_config"}
    with pytest.raises(UnknownModelError, match="has no 'text_config'"):
        vlm_spec_from_config(no_text, "broken")
    with pytest.raises(UnknownModelError, match="vision_config has no 'hidden_size'"):
        vlm_spec_from_config({**PROBE, "vision_config": {k: v for k, v in PROBE["vision_config"].items() if k != "hidden_size"}}, "broken")
    with pytest.raises(UnknownModelError, match=r"deepstack_visual_indexes \[7\] are not blocks of a 3-block tower"):
        vlm_spec_from_config({**PROBE, "vision_config": {**PROBE["vision_config"], "deepstack_visual_indexes": [0, 7]}}, "broken")


def test_cli_breakdown_json_and_schedule():
    runner = CliRunner()
    table = runner.invoke(cli, ["estimate", "--model", "qwen3-vl-8b", "--gpu", "t4", "--method", "qlora", "--stage", "2", "--image-size", "448x448"])
    assert table.exit_code == 0, table.output
    assert "vision/weights" in table.output and "projector/activations" in table.output
    doc = json.loads(runner.invoke(cli, ["estimate", "--model", "qwen3-vl-2b", "--method", "lora", "--image-size", "640x480", "--json"]).output)
    assert doc["image_tokens"] == 300 + 2  # 640x480 -> 640x480 (multiples of 32): 40 x 30 patches / 4
    assert doc["stage"] == 2 and set(doc["estimates"][0]["components"]) == {"vision", "projector", "llm"}
    both = json.loads(runner.invoke(cli, ["estimate", "--model", "qwen3-vl-4b", "--method", "lora", "--schedule", "two-stage", "--json"]).output)
    assert [e["stage"] for e in both["estimates"]] == [1, 2]


def test_a_bad_config_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "qwen3.json"
    path.write_text(json.dumps({k: v for k, v in PROBE.items() if k != "text_config"}))
    result = CliRunner().invoke(cli, ["estimate", "--model", str(path), "--method", "lora", "--stage", "2"])
    assert result.exit_code != 0
    assert result.output.startswith("Error: ") and "has no 'text_config'" in result.output and result.output.count("\n") == 1


def test_the_trainer_runs_both_stages_on_a_tiny_qwen3_vl(tmp_path):
    """`vramplan run --schedule two-stage` on a written tiny Qwen3-VL directory: stage 2 starts from
    every stage-1 projector tensor, DeepStack mergers included (3 mergers x norm, fc1, fc2 weight + bias)."""
    from vramplan.calibrate.store import Store
    from vramplan.calibrate.vlm_model_dir import caption_rows, write_tiny_vlm_dir

    model = write_tiny_vlm_dir(tmp_path / "model", "qwen3_vl")
    rows = caption_rows(4, tmp_path / "images")
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = CliRunner().invoke(cli, ["run", "--model", str(model), "--data", str(tmp_path / "captions.jsonl"), "--out", str(tmp_path / "out"),
                                      "--db", str(tmp_path / "runs.db"), "--max-steps", "1", "--seq-len", "96", "--precision", "fp32",
                                      "--no-progress", "--schedule", "two-stage"])
    assert result.exit_code == 0, result.output
    assert "initialised 18 tensors" in result.output
    assert len(Store.open(tmp_path / "runs.db").runs()) == 2


@pytest.mark.parametrize("tower_trains", [False, True])
def test_deepstack_norm_inputs_share_storage_as_the_estimate_assumes(tower_trains):
    """Saved tensors, by storage: a DeepStack merger's LayerNorm keeps its block's output, which is the
    final merger's norm input for a tap on the last block, and the next block's norm1 input when the
    tower trains (a frozen tower's blocks save nothing)."""
    import torch
    import transformers

    config = {**PROBE, "vision_config": {**PROBE["vision_config"], "deepstack_visual_indexes": [1, 2]}}
    model = transformers.Qwen3VLForConditionalGeneration._from_config(transformers.AutoConfig.for_model(**config))
    visual = model.model.visual
    for name, p in visual.named_parameters():
        p.requires_grad_(tower_trains or name.startswith(("merger.", "deepstack_merger_list.")))
    storages: dict[str, list[int]] = {}

    def watch(name, module):
        def pack(t):
            if t.dim() == 2 and t.shape[1] > 1:  # the norm's input (weight, bias, mean and rstd are 1-D or 1 wide)
                storages.setdefault(name, []).append(t.untyped_storage().data_ptr())
            return t

        def pre(mod, args):
            mod._saving = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
            mod._saving.__enter__()
        module.register_forward_pre_hook(pre)
        module.register_forward_hook(lambda mod, args, out: mod._saving.__exit__(None, None, None))

    watch("tap1", visual.deepstack_merger_list[0].norm)
    watch("tap2", visual.deepstack_merger_list[1].norm)
    watch("block2", visual.blocks[2].norm1)
    watch("merger", visual.merger.norm)
    visual(torch.randn(64, 3 * 2 * 16 * 16), grid_thw=torch.tensor([[1, 8, 8]]))
    assert storages["tap2"][0] == storages["merger"][0]  # the last block's output: one storage
    assert (storages["tap1"][0] in storages.get("block2", [])) == tower_trains
    spec = vlm_spec_from_config(config, "taps")
    assert (spec.projector.shared_inputs, spec.projector.block_shared_inputs) == (1, 1)
