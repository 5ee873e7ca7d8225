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


def test_targets_name_the_components_they_reach():
    doc = json.loads(_run("--model", "llava-1.5-7b", "--method", "lora", "--targets", "q,v", "--json").output)
    parts = doc["estimates"][0]["target_components"]
    assert parts["vision"] == {"matched_modules": 24 * 2, "adapted_modules": 0}  # CLIP has q_proj and v_proj too
    assert parts["llm"] == {"matched_modules": 32 * 2, "adapted_modules": 32 * 2}
    table = " ".join(_run("--model", "qwen2-vl-7b", "--method", "lora", "--targets", "all-linear").output.split())
    assert "targets all-linear: PEFT given these names would wrap Linears in vision tower 128, projector 2, LLM 196; adapted here: LLM 196" in table


def test_models_lists_the_vlm_catalog_with_a_kind_and_components():
    doc = json.loads(CliRunner().invoke(cli, ["models", "--json"]).output)
    kinds = {row["id"]: row for row in doc}
    assert kinds["meta-llama/Meta-Llama-3-8B"]["kind"] == "text" and "base_params" in kinds["meta-llama/Meta-Llama-3-8B"]
    qwen = kinds["Qwen/Qwen2-VL-7B-Instruct"]
    assert qwen["kind"] == "vlm" and qwen["base_params"] == 8_291_375_616 and qwen["aliases"][0] == "qwen2-vl-7b"
    assert qwen["components"]["projector"] == 44_575_744 and sum(qwen["components"].values()) == qwen["base_params"]
    table = " ".join(CliRunner().invoke(cli, ["models"]).output.split())
    assert "Vision-language models" in table and "llava-1.5-7b" in table


def test_a_bad_or_unsupported_vlm_config_file_is_a_one_line_error(tmp_path):
    from vramplan.calibrate.vlm_build import VLM_PROBE_MODELS

    cases = {
        "no-heads": ({k: v for k, v in VLM_PROBE_MODELS["probe-qwen2-vl"].items() if k != "num_attention_heads"}, "has no 'num_attention_heads'"),
        "no-text": ({k: v for k, v in VLM_PROBE_MODELS["probe-llava"].items() if k != "text_config"}, "has no 'text_config'"),
        "no-vision": ({k: v for k, v in VLM_PROBE_MODELS["probe-qwen2-vl"].items() if k != "vision_config"}, "has no 'vision_config'"),
        "idefics2": ({**VLM_PROBE_MODELS["probe-llava"], "model_type": "idefics2"}, "model_type 'idefics2' of idefics2.json is not supported"),
        "paligemma-clip": ({**VLM_PROBE_MODELS["probe-llava"], "model_type": "paligemma"}, "only SigLIP towers are counted for paligemma"),
    }
    for name, (config, message) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(config))
        result = CliRunner().invoke(cli, ["estimate", "--model", str(path), "--method", "lora", "--stage", "2"])
        assert result.exit_code != 0, name
        assert result.output.startswith("Error: ") and message in result.output and result.output.count("\n") == 1, result.output
