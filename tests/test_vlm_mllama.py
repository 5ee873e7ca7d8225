"""Llama-3.2-Vision (`mllama`): catalog counts, the processor's tiles, the CLI contracts, the
cross-attention premises on the real transformers classes, and bad configs."""

import json
import warnings

import pytest
from click.testing import CliRunner

from vramplan.calibrate.vlm_build import VLM_PROBE_MODELS
from vramplan.cli import cli
from vramplan.planner.catalog.vlm_models import VLM_CONFIGS
from vramplan.planner.vision import vlm_spec_from_config

ELEVEN_B = "meta-llama/Llama-3.2-11B-Vision-Instruct"


def _meta_counts(config: dict) -> dict:
    import torch
    import transformers

    from vramplan.calibrate.vlm_build import component_of

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.MllamaForConditionalGeneration._from_config(transformers.AutoConfig.for_model(**config))
    counts = {"vision": 0, "projector": 0, "llm": 0}
    for name, p in model.named_parameters():
        counts[component_of(name, "mllama")] += p.numel()
    return counts


@pytest.mark.parametrize("config", [VLM_CONFIGS[ELEVEN_B]["config"], VLM_PROBE_MODELS["probe-mllama"]], ids=["11b", "probe"])
def test_component_params_equal_the_meta_built_model(config):
    spec = vlm_spec_from_config(config, "m")
    assert _meta_counts(config) == {"vision": spec.vision.params, "projector": spec.projector.params, "llm": spec.decoder.base_params}


@pytest.mark.parametrize("size", [(560, 560), (1280, 720), (300, 800), (2000, 500), (100, 90)])
def test_tiles_follow_the_image_processor(size):
    """The real MllamaImageProcessorPil: the canvas's tiles, every image padded to max_image_tiles,
    and the pixel tensor the tower gets."""
    import numpy as np
    from PIL import Image
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    spec = vlm_spec_from_config(VLM_CONFIGS[ELEVEN_B]["config"], ELEVEN_B)
    width, height = size
    image = Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8))
    out = MllamaImageProcessorPil(size={"height": 560, "width": 560}, max_image_tiles=4)([[image]], return_tensors="np")
    tokens = spec.family.image_tokens(spec, width, height, None)
    across, down = tokens.resized[0] // 560, tokens.resized[1] // 560
    assert out["num_tiles"] == [[across * down]]
    assert out["pixel_values"].shape == (1, 1, 4, 3, 560, 560)
    assert out["pixel_values"].size == spec.vision.pixel_values(tokens.vit, tokens.tiles)
    assert tokens.llm == 1 and tokens.vit == 4 * 1601


def test_estimate_prints_components_and_the_cross_attention_contract():
    result = CliRunner().invoke(cli, ["estimate", "--model", "llama-3.2-11b-vision", "--gpu", "t4", "--method", "qlora", "--stage", "2"], catch_exceptions=False)
    text = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    for part in ("vision/activations", "vision/attention_mask", "projector/activations", "llm/activations/cross_checkpoint_inputs", "fits?"):
        assert part in text
    assert "8 cross-attention layers attend over 6,404 vision tokens per example" in text
    assert "--seq-len counts text only" in text


def test_json_carries_image_tokens_components_stage_and_two_stages():
    args = ["estimate", "--model", "llama-3.2-11b-vision", "--method", "lora", "--images", "2", "--image-size", "1280x720", "--json"]
    doc = json.loads(CliRunner().invoke(cli, args, catch_exceptions=False).output)
    assert doc["image_tokens"] == 2 and doc["stage"] == 2
    assert doc["cross_attention"]["vision_tokens"] == 2 * 4 * 1601 and doc["cross_attention"]["layers"] == [3, 8, 13, 18, 23, 28, 33, 38]
    assert set(doc["estimates"][0]["components"]) == {"vision", "projector", "llm"}
    both = json.loads(CliRunner().invoke(cli, [*args, "--schedule", "two-stage"], catch_exceptions=False).output)
    assert both["stage"] == [1, 2]
    first, second = both["estimates"]
    assert first["components"]["llm"]["trainable_params"] == 0 and second["components"]["llm"]["trainable_params"] > 0


def test_without_checkpointing_stage_one_keeps_no_text_layer_before_the_first_cross_layer():
    """Stage 1, no checkpointing: the text stream needs no gradient until the first cross layer, so
    moving the cross layers later lowers the peak, while with checkpointing every layer keeps its input."""
    from vramplan.planner.specs import RunConfig
    from vramplan.planner.vision.run import VlmRun
    from vramplan.planner.vlm_estimate import estimate_vlm

    config = VLM_PROBE_MODELS["probe-mllama"]
    late = {**config, "text_config": {**config["text_config"], "cross_attention_layers": [2, 3]}}
    peaks = {}
    for name, cfg in (("early", config), ("late", late)):
        for ckpt in (False, True):
            run = RunConfig(method="lora", device_kind="cpu", precision="bf16", batch=2, seq_len=512, grad_ckpt=ckpt)
            peaks[name, ckpt] = estimate_vlm(vlm_spec_from_config(cfg, name), run, VlmRun(stage=1)).breakdown.peak_allocated_bytes
    assert peaks["late", False] < peaks["early", False]
    assert peaks["late", True] == peaks["early", True]


def test_cross_layers_save_kv_over_the_vision_tokens():
    """The premise of `cross_attention.cross_layer_saved`, on transformers' own class: a cross
    layer's SDPA saves k and v repeated to every head at the vision length, the mask once."""
    import torch
    import transformers

    config = transformers.AutoConfig.for_model(**VLM_PROBE_MODELS["probe-mllama"]).text_config
    config._attn_implementation = "sdpa"
    layer = transformers.models.mllama.modeling_mllama.MllamaCrossAttentionDecoderLayer(config, 1)
    text, vision = 16, 40
    hidden = torch.randn(1, text, 256, requires_grad=True)
    states = torch.randn(1, vision, 256, requires_grad=True)
    mask = torch.zeros(1, 1, text, vision)
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
        layer(hidden, cross_attention_states=states, cross_attention_mask=mask, attention_mask=None, full_text_row_masked_out_mask=None)
    heads, head_dim = config.num_attention_heads, 256 // config.num_attention_heads
    assert shapes.count((1, heads, vision, head_dim)) >= 2  # k and v, repeated from 4 kv heads to 8
    assert (1, 1, text, vision) in shapes


def test_a_bad_mllama_config_is_a_one_line_error(tmp_path):
    base = VLM_PROBE_MODELS["probe-mllama"]
    cases = {
        "no-width": ({**base, "text_config": {k: v for k, v in base["text_config"].items() if k != "hidden_size"}}, "text_config has no 'hidden_size'"),
        "bad-cross": ({**base, "text_config": {**base["text_config"], "cross_attention_layers": [1, 9]}}, "cross_attention_layers [9] are not among its 4 num_hidden_layers"),
        "no-vision": ({k: v for k, v in base.items() if k != "vision_config"}, "has no 'vision_config'"),
    }
    for name, (config, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(config))
        result = CliRunner().invoke(cli, ["estimate", "--model", str(path), "--method", "lora", "--stage", "2"])
        assert result.exit_code != 0, name
        assert result.output.startswith("Error: ") and message in result.output and result.output.count("\n") == 1, result.output


def test_the_trainer_runs_both_stages_on_a_tiny_mllama(tmp_path):
    """`vramplan run --schedule two-stage`: tiles and the cross-attention mask come from MllamaProcessor's
    own helpers, stage 2 starts from stage 1's projector, and both runs are recorded beside their estimates."""
    import sqlite3

    from vramplan.calibrate.vlm_model_dir import caption_rows, write_tiny_vlm_dir

    data = tmp_path / "captions.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in caption_rows(4, tmp_path / "images")), encoding="utf-8")
    model = write_tiny_vlm_dir(tmp_path / "mllama", "mllama")
    args = ["run", "--schedule", "two-stage", "--model", model, "--data", data, "--out", tmp_path / "out", "--db", tmp_path / "db.db",
            "--max-steps", 2, "--seq-len", 64, "--batch", 2, "--precision", "fp32", "--no-progress"]
    result = CliRunner().invoke(cli, list(map(str, args)))
    assert result.exit_code == 0, result.output
    assert "initialised 2 tensors from" in result.output  # the projector's weight and bias
    with sqlite3.connect(tmp_path / "db.db") as con:
        rows = con.execute("SELECT peak_allocated_bytes, est_peak_allocated_bytes FROM runs ORDER BY id").fetchall()
    assert len(rows) == 2 and all(measured and estimated for measured, estimated in rows)
