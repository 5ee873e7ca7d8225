"""Idefics3 / SmolVLM: tiles and tokens against the real processors, the pixel-shuffle connector, counts, errors."""

import pytest

from vramplan.calibrate.vlm_build import VLM_PROBE_MODELS
from vramplan.planner.catalog.vlm_models import VLM_CONFIGS
from vramplan.planner.errors import UnknownModelError
from vramplan.planner.specs import RunConfig
from vramplan.planner.vision import vlm_spec_from_config
from vramplan.planner.vision.run import VlmRun
from vramplan.planner.vlm_estimate import estimate_vlm

SMOL = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>", "\n",
            *[f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]]


def _spec(hub_id=SMOL):
    entry = VLM_CONFIGS[hub_id]
    return vlm_spec_from_config(entry["config"], hub_id, entry.get("processor"))


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(SPECIALS + ["describe"])}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="removed")
    tok.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def test_catalog_counts_equal_the_meta_built_model():
    import warnings

    import torch
    import transformers

    from vramplan.calibrate.vlm_build import component_of

    config = VLM_CONFIGS[SMOL]["config"]
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.SmolVLMForConditionalGeneration._from_config(transformers.AutoConfig.for_model(**config))
    counts = {"vision": 0, "projector": 0, "llm": 0}
    for name, p in model.named_parameters():
        counts[component_of(name, "smolvlm")] += p.numel()
    spec = _spec()
    assert counts == {"vision": spec.vision.params, "projector": spec.projector.params, "llm": spec.decoder.base_params}
    assert spec.params == 507_482_304


@pytest.mark.parametrize("family", ["smolvlm", "idefics3"])
@pytest.mark.parametrize("size", [(512, 512), (1024, 768), (300, 900), (2000, 400), (100, 100)])
@pytest.mark.parametrize("splitting", [True, False])
def test_tiles_and_tokens_match_the_processor(family, size, splitting):
    import numpy as np
    import transformers
    from PIL import Image

    base = VLM_PROBE_MODELS["probe-smolvlm"]  # 128-px tiles, images resized to 256 px
    config = {**base, "model_type": family}
    spec = vlm_spec_from_config(config, "tiny", {"do_image_splitting": splitting})
    expected = spec.family.image_tokens(spec, *size, None)
    # SmolVLMProcessor also wants a video processor; its image prompt string is Idefics3Processor's
    cls = {"smolvlm": "SmolVLMImageProcessorPil", "idefics3": "Idefics3ImageProcessorPil"}[family]
    images = getattr(transformers, cls)(size={"longest_edge": 256}, max_image_size={"longest_edge": 128}, do_image_splitting=splitting)
    processor = transformers.Idefics3Processor(image_processor=images, tokenizer=_tokenizer(), image_seq_len=16)
    image = Image.fromarray(np.zeros((size[1], size[0], 3), dtype=np.uint8))
    out = processor(images=[image], text=["<image>describe"], return_tensors="pt")
    assert out["pixel_values"].shape[1] == expected.tiles  # the vision batch is tiles
    assert int((out["input_ids"] == processor.image_token_id).sum()) == expected.tiles * 16
    assert out["input_ids"].shape[1] - 1 == expected.llm  # every token but "describe" is the image's
    assert expected.vit == expected.tiles * 64


def test_pixel_shuffle_cuts_tokens_by_scale_squared():
    spec = _spec()
    tokens = spec.family.image_tokens(spec, 2048, 1536, None)
    assert (tokens.tiles, tokens.vit) == (13, 13 * 1024)  # 4 x 3 tiles of 512 px + the global image
    assert tokens.llm == 12 * (64 + 2) + 3 + 1 + 64 + 3  # 1024 patches / 4^2 = 64 a tile
    assert [(l.in_features, l.out_features, l.bias) for l in spec.projector.linears] == [(768 * 16, 960, False)]


def test_vision_terms_grow_with_tiles():
    spec = _spec()
    run = RunConfig(method="lora", device_kind="cuda", batch=1, seq_len=4096, grad_ckpt=True)
    # the longest edge goes to 2048 px either way: a wide image is 4 x 1 tiles, a square one 4 x 4 (+ global)
    wide = estimate_vlm(spec, run, VlmRun(stage=2, image_sizes=((1000, 250),)))
    square = estimate_vlm(spec, run, VlmRun(stage=2, image_sizes=((500, 500),)))
    assert (wide.plan.tiles, square.plan.tiles) == (5, 17)
    assert square.components()["vision"]["total_bytes"] > 3 * wide.components()["vision"]["total_bytes"] / 2


def test_bad_configs_name_what_is_missing():
    config = VLM_CONFIGS[SMOL]["config"]
    with pytest.raises(UnknownModelError, match="no 'text_config'"):
        vlm_spec_from_config({k: v for k, v in config.items() if k != "text_config"}, "broken")
    with pytest.raises(UnknownModelError, match="no 'vision_config'"):
        vlm_spec_from_config({k: v for k, v in config.items() if k != "vision_config"}, "broken")
    with pytest.raises(UnknownModelError, match="scale_factor 3 does not divide"):
        vlm_spec_from_config({**config, "scale_factor": 3}, "broken")
    spec = vlm_spec_from_config(config, "broken", {"tile": 384})
    with pytest.raises(UnknownModelError, match="processor tile 384 differs"):
        spec.family.image_tokens(spec, 512, 512, None)


def test_vramplan_run_trains_a_tiny_smolvlm_in_two_stages(tmp_path):
    import json
    import sqlite3

    from click.testing import CliRunner

    from vramplan.calibrate.vlm_model_dir import caption_rows, write_tiny_vlm_dir
    from vramplan.cli import cli

    model = write_tiny_vlm_dir(tmp_path / "smolvlm", "smolvlm")
    data = tmp_path / "captions.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in caption_rows(12, tmp_path / "images")), encoding="utf-8")
    db = tmp_path / "runs.db"
    result = CliRunner().invoke(cli, ["run", "--schedule", "two-stage", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "out"),
                                      "--db", str(db), "--max-steps", "3", "--seq-len", "160", "--batch", "2", "--precision", "fp32", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "stage 1: projector only" in result.output and "stage 2: projector + lora on the LLM" in result.output
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT run_config, peak_allocated_bytes FROM runs ORDER BY id").fetchall()
    assert [json.loads(r[0])["vlm"]["stage"] for r in rows] == [1, 2] and all(r[1] > 0 for r in rows)


def test_cli_estimate_json_and_two_stage_schedule():
    import json

    from click.testing import CliRunner

    from vramplan.cli import cli

    args = ["estimate", "--model", "smolvlm2-500m", "--gpu", "t4", "--method", "qlora", "--image-size", "1024x768", "--seq-len", "2048"]
    out = json.loads(CliRunner().invoke(cli, [*args, "--stage", "2", "--json"]).output)
    assert out["image_tokens"] == 863 and out["stage"] == 2
    components = out["estimates"][0]["components"]
    assert components["projector"]["trainable_params"] == 768 * 16 * 960 and components["vision"]["trainable_params"] == 0
    assert components["vision"]["bytes"]["vision/checkpoint_inputs"] == 12 * 13 * 1024 * 768 * 4  # 13 tiles, fp32 tower (kbit prep)
    both = json.loads(CliRunner().invoke(cli, [*args, "--schedule", "two-stage", "--json"]).output)
    assert [e["stage"] for e in both["estimates"]] == [1, 2]
    text = CliRunner().invoke(cli, [*args, "--stage", "2"]).output
    assert "vision/weights" in text and "projector/weights" in text and "llm/weights/base" in text
