"""`calibrate --trace` on a vision-language model takes the stage and image flags of `estimate`."""

import json

import pytest
from click.testing import CliRunner

from vramplan.cli import cli


def _trace(*args):
    return CliRunner().invoke(cli, ["calibrate", "--trace", *args])


def test_stage_1_at_an_image_size_is_traced_and_matches_the_estimate():
    result = _trace("--model", "qwen2-vl-2b", "--method", "qlora", "--stage", "1", "--image-size", "448x448", "--seq-len", "1024", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output[result.output.index("{"):])
    assert doc["stage"] == 1 and doc["image_tokens"] == 258  # (448 / 28)² = 256 merged patches + vision start/end
    assert doc["vlm"]["image_sizes"] == [[448, 448]]
    assert doc["trainable_by_component"] == {"vision": 0, "projector": 34_087_936, "llm": 0}  # stage 1: the projector alone
    assert abs(doc["error_pct"]) < 2


@pytest.mark.parametrize("args, message", [
    (("--trace", "--model", "8b", "--stage", "1"), "Error: --stage and the image flags are for vision-language models; meta-llama/Llama-3.1-8B is a text model"),
    (("--device", "cpu", "--stage", "1"), "Error: --stage, --images, --image-size, --max-pixels, --vision, --projector and --quantize-vision go with --trace (one VLM config)"),
    (("--trace", "--model", "qwen2-vl-2b", "--schedule", "two-stage"), "Error: --schedule: --trace traces one stage at a time; give --stage 1 or --stage 2"),
])
def test_vlm_flags_out_of_place_are_one_line_errors(args, message):
    result = CliRunner().invoke(cli, ["calibrate", *args])
    assert result.exit_code != 0
    assert [line for line in result.output.splitlines() if line.startswith("Error:")] == [message]
    assert "Traceback" not in result.output
