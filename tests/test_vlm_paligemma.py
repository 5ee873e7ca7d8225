"""PaliGemma: SigLIP counts, fixed image tokens (against the real processor), the prefix-LM mask, config errors."""

import pytest

from vramplan.calibrate.vlm_build import VLM_PROBE_MODELS
from vramplan.planner.catalog.vlm_models import VLM_CONFIGS
from vramplan.planner.errors import UnknownModelError
from vramplan.planner.specs import RunConfig
from vramplan.planner.vision import vlm_spec_from_config
from vramplan.planner.vision.run import VlmRun
from vramplan.planner.vlm_estimate import estimate_vlm

# meta-device builds with transformers 5.24 (PaliGemma-3B: keras-hub's 2,923,335,408 counts the
# unpadded 257,152-token vocabulary: +64 x 2048 here)
PUBLISHED = {
    "google/paligemma-3b-pt-224": 2_923_466_480,
    "google/paligemma-3b-pt-448": 2_924_351_216,
    "google/paligemma2-3b-pt-224": 3_032_242_416,
    "google/paligemma2-10b-pt-224": 9_662_638_832,
}


def _spec(hub_id):
    return vlm_spec_from_config(VLM_CONFIGS[hub_id]["config"], hub_id)


@pytest.mark.parametrize("hub_id", sorted(PUBLISHED))
def test_catalog_counts(hub_id):
    assert _spec(hub_id).params == PUBLISHED[hub_id] == _spec(hub_id).model.base_params


def test_counts_equal_the_meta_built_model_per_component():
    import warnings

    import torch
    import transformers

    from vramplan.calibrate.vlm_build import component_of

    config = VLM_CONFIGS["google/paligemma2-3b-pt-224"]["config"]
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.PaliGemmaForConditionalGeneration._from_config(transformers.AutoConfig.for_model(**config))
    counts = {"vision": 0, "projector": 0, "llm": 0}
    for name, p in model.named_parameters():
        counts[component_of(name, "paligemma")] += p.numel()
    spec = _spec("google/paligemma2-3b-pt-224")
    assert counts == {"vision": spec.vision.params, "projector": spec.projector.params, "llm": spec.decoder.base_params}


@pytest.mark.parametrize("hub_id,tokens", [("google/paligemma-3b-pt-224", 256), ("google/paligemma-3b-pt-448", 1024)])
@pytest.mark.parametrize("size", [(224, 224), (1280, 720), (300, 900)])
def test_tokens_are_fixed_and_match_the_processor(hub_id, tokens, size):
    import numpy as np
    import transformers
    from PIL import Image

    from vramplan.calibrate.vlm_model_dir import make_tokenizer

    spec = _spec(hub_id)
    assert spec.family.image_tokens(spec, *size, None).llm == tokens
    edge = spec.vision.image_size
    images = transformers.SiglipImageProcessorPil(size={"height": edge, "width": edge})
    images.image_seq_length = tokens
    processor = transformers.PaliGemmaProcessor(image_processor=images, tokenizer=make_tokenizer())
    image = Image.fromarray(np.zeros((size[1], size[0], 3), dtype=np.uint8))
    out = processor(images=image, text="<image>describe", suffix="red", return_tensors="pt")
    assert int((out["input_ids"] == processor.image_token_id).sum()) == tokens
    assert tuple(out["pixel_values"].shape[-2:]) == (edge, edge)
    assert int((out["token_type_ids"] == 0).sum()) > tokens  # image + prefix see each other (prefix-LM)


def test_prefix_lm_mask_is_charged_like_a_packed_mask():
    from dataclasses import replace

    config = VLM_PROBE_MODELS["probe-paligemma"]
    spec = vlm_spec_from_config(config, "probe-paligemma")
    run = RunConfig(method="lora", device_kind="cpu", precision="bf16", batch=2, seq_len=512, grad_ckpt=False)
    masked = estimate_vlm(spec, run, VlmRun(stage=2)).breakdown
    causal = estimate_vlm(replace(spec, family=replace(spec.family, prefix_lm=False)), run, VlmRun(stage=2)).breakdown
    # a bf16 copy of the batch x seq x seq mask per layer, and the boolean mask built once
    extra = spec.decoder.num_layers * 2 * 2 * 512 * 512 + 2 * 512 * 512
    assert masked.peak_allocated_bytes - causal.peak_allocated_bytes >= extra
    # checkpointed, only the mask and its int64 block ids (what probe-paligemma measures, LoRA and QLoRA)
    for method in ("lora", "qlora"):
        ckpt = replace(run, method=method, grad_ckpt=True)
        masked = estimate_vlm(spec, ckpt, VlmRun(stage=2)).breakdown
        causal = estimate_vlm(replace(spec, family=replace(spec.family, prefix_lm=False)), ckpt, VlmRun(stage=2)).breakdown
        assert masked.by_name()["llm/activations/prefix_mask"] == 2 * 512 * 512 + 8 * 2 * 512
        assert masked.peak_allocated_bytes - causal.peak_allocated_bytes == 2 * 512 * 512 + 8 * 2 * 512


def test_siglip_tower_and_projector_shape():
    spec = _spec("google/paligemma-3b-pt-224")
    assert (spec.vision.width, spec.vision.num_layers, spec.vision.mlp_width) == (1152, 27, 4304)
    assert not spec.vision.class_token and spec.vision.mlp_act_saved == 1
    assert [(l.in_features, l.out_features) for l in spec.projector.linears] == [(1152, 2048)]


def test_bad_configs_name_what_is_missing():
    config = VLM_CONFIGS["google/paligemma-3b-pt-224"]["config"]
    with pytest.raises(UnknownModelError, match="no 'text_config'"):
        vlm_spec_from_config({k: v for k, v in config.items() if k != "text_config"}, "broken")
    with pytest.raises(UnknownModelError, match="no 'vision_config'"):
        vlm_spec_from_config({k: v for k, v in config.items() if k != "vision_config"}, "broken")
    with pytest.raises(UnknownModelError, match="only SigLIP towers"):
        vlm_spec_from_config({**config, "vision_config": {**config["vision_config"], "model_type": "clip_vision_model"}}, "broken")
    with pytest.raises(UnknownModelError, match="projection_dim 1024 differs"):
        vlm_spec_from_config({**config, "projection_dim": 1024}, "broken")


def test_vramplan_run_trains_a_tiny_paligemma_with_the_caption_as_suffix(tmp_path):
    import json
    import sqlite3

    from click.testing import CliRunner

    from vramplan.calibrate.trainer.vlm_data import IGNORE, load_vlm_dataset
    from vramplan.calibrate.trainer.vlm_processor import load_processor
    from vramplan.calibrate.vlm_model_dir import caption_rows, write_tiny_vlm_dir
    from vramplan.cli import cli

    model = write_tiny_vlm_dir(tmp_path / "paligemma", "paligemma")
    data = tmp_path / "captions.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in caption_rows(12, tmp_path / "images")), encoding="utf-8")
    # the trained caption is the suffix: token type 1 exactly where labels are kept, 0 over image + prompt
    ds = load_vlm_dataset(data, load_processor(model, json.loads((model / "config.json").read_text())), "paligemma", 300, eval_fraction=0.0)
    for e in ds.train:
        assert [t == 1 for t in e.extras["token_type_ids"][1:]] == [label != IGNORE for label in e.labels[1:]]
    db = tmp_path / "runs.db"
    result = CliRunner().invoke(cli, ["run", "--schedule", "two-stage", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "out"),
                                      "--db", str(db), "--max-steps", "3", "--seq-len", "300", "--batch", "2", "--precision", "fp32", "--no-progress"])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT run_config, peak_allocated_bytes FROM runs ORDER BY id").fetchall()
    assert [json.loads(r[0])["vlm"]["stage"] for r in rows] == [1, 2] and all(r[1] > 0 for r in rows)


def test_cli_estimate_on_the_catalog_entry():
    import json

    from click.testing import CliRunner

    from vramplan.cli import cli

    result = CliRunner().invoke(cli, ["estimate", "--model", "paligemma-3b-448", "--gpu", "t4", "--method", "qlora", "--stage", "2",
                                      "--image-size", "1280x720", "--seq-len", "1280", "--json"])
    out = json.loads(result.output)
    assert out["image_tokens"] == 1024 and out["estimates"][0]["text_tokens"] == 256
    assert "llm/activations/prefix_mask" in out["estimates"][0]["terms"]  # checkpointing is on by default
    result = CliRunner().invoke(cli, ["estimate", "--model", "paligemma-3b-448", "--method", "lora", "--stage", "2", "--seq-len", "1000"])
    assert result.exit_code != 0 and result.output.startswith("Error: --seq-len 1000") and result.output.count("\n") == 1


def test_siglip_mlp_saves_its_tanh_gelu_input_only():
    """The premise of `mlp_act_saved=1`, tensor by tensor on transformers' SiglipMLP (frozen, input needing grad)."""
    import torch
    import transformers
    from transformers.models.siglip.modeling_siglip import SiglipMLP

    mlp = SiglipMLP(transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=48, hidden_act="gelu_pytorch_tanh")).requires_grad_(False)
    x = torch.randn(2, 5, 32, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        mlp(x)
    activations = [t for t in saved if t.numel() == 2 * 5 * 48]  # weights are parameters, not new memory
    assert len(activations) == _spec("google/paligemma-3b-pt-224").vision.mlp_act_saved == 1
