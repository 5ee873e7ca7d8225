"""`vramplan estimate` on vision-language models: the component table, JSON contracts, stages, errors."""

import json

from click.testing import CliRunner

from vramplan.cli import cli


def _run(*args):
    return CliRunner().invoke(cli, ["estimate", *args], catch_exceptions=False)


def test_qwen2_vl_qlora_stage_2_on_t4_prints_components_and_fit():
    result = _run("--model", "qwen2-vl-7b", "--gpu", "t4", "--method", "qlora", "--stage", "2", "--image-size", "448x448")
    assert result.exit_code == 0, result.output
    for text in ("vision/weights", "projector/grads", "llm/activations/logits", "image tokens 258", "fits?", "stage 2"):
        assert text in " ".join(result.output.split())  # rich wraps lines at the terminal width


def test_json_carries_image_tokens_components_and_stage():
    result = _run("--model", "qwen2-vl-7b", "--method", "qlora", "--stage", "2", "--image-size", "448x448", "--images", "2", "--json")
    doc = json.loads(result.output)
    assert doc["image_tokens"] == 2 * 258 and doc["stage"] == 2
    est = doc["estimates"][0]
    assert set(est["components"]) == {"vision", "projector", "llm"}
    assert est["components"]["projector"]["trainable_params"] == 44_575_744
    assert est["text_tokens"] == 2048 - 516


def test_two_stage_schedule_reports_both_and_the_larger_peak():
    result = _run("--model", "llava-1.5-7b", "--method", "lora", "--schedule", "two-stage", "--json")
    doc = json.loads(result.output)
    assert [e["stage"] for e in doc["estimates"]] == [1, 2]
    assert doc["peak_device_used_bytes"] == max(e["device_used_bytes"] for e in doc["estimates"])
    table = _run("--model", "llava-1.5-7b", "--method", "lora", "--schedule", "two-stage")
    assert "two-stage schedule: the larger peak is stage" in table.output


def test_max_pixels_lowers_tokens():
    full = json.loads(_run("--model", "qwen2-vl-2b", "--method", "lora", "--image-size", "1920x1080", "--seq-len", "4096", "--json").output)
    capped = json.loads(_run("--model", "qwen2-vl-2b", "--method", "lora", "--image-size", "1920x1080", "--max-pixels", "1003520", "--json").output)
    assert (full["image_tokens"], capped["image_tokens"]) == (2693, 1224)


def test_errors_are_one_line():
    result = CliRunner().invoke(cli, ["estimate", "--model", "qwen2-vl-7b", "--method", "lora", "--image-size", "3840x2160"])
    assert result.exit_code != 0
    assert result.output.strip().startswith("Error: --seq-len 2048 is the whole sequence") and result.output.count("\n") == 1
    result = CliRunner().invoke(cli, ["estimate", "--model", "8b", "--stage", "1"])
    assert result.exit_code != 0 and "Error:" in result.output and "text-only model" in result.output
    result = CliRunner().invoke(cli, ["estimate", "--model", "qwen2-vl-2b", "--method", "lora", "--quantize-vision"])
    assert "Error: --quantize-vision goes with a 4-bit method" in result.output
