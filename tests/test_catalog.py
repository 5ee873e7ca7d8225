"""Every catalog entry against its published parameter count, and usable offline.

A published figure is checked within the rounding it is written with: "8.03B" allows half a unit
of its last digit (±0.005B), an exact count ("2,506,172,416") allows nothing. Sources, in order of
preference: an exact count published with the weights (keras-hub preset metadata, mirrored from the
Kaggle model pages; the hub API's safetensors total), else the figure on the model card or paper.
"""

import re

import pytest
from click.testing import CliRunner

from vramplan.cli import cli
from vramplan.planner.catalog import catalog_spec
from vramplan.planner.catalog.models import MODEL_CONFIGS

KERAS = "keras-team/keras-hub keras_hub/src/models/{}_presets.py"  # preset metadata "params"
HUB = "the hub model page's safetensors size"  # shown as 3 significant figures

PUBLISHED: dict[str, tuple[str, str]] = {
    # Llama
    "meta-llama/Llama-2-7b-hf": ("6,738,415,616", KERAS.format("llama/llama") + " llama2_7b_en"),
    "meta-llama/Llama-2-7b-chat-hf": ("6,738,415,616", KERAS.format("llama/llama") + " llama2_instruct_7b_en"),
    "meta-llama/Llama-2-13b-hf": ("13.0B", HUB),
    "meta-llama/Llama-2-70b-hf": ("69.0B", HUB),
    "meta-llama/Meta-Llama-3-8B": ("8,030,261,248", KERAS.format("llama3/llama3") + " llama3_8b_en"),
    "meta-llama/Meta-Llama-3-8B-Instruct": ("8,030,261,248", KERAS.format("llama3/llama3") + " llama3_instruct_8b_en"),
    "meta-llama/Meta-Llama-3-70B": ("70.6B", HUB),
    "meta-llama/Llama-3.1-8B": ("8.03B", HUB),
    "meta-llama/Llama-3.1-8B-Instruct": ("8.03B", HUB),
    "meta-llama/Llama-3.1-70B": ("70.6B", HUB),
    "meta-llama/Llama-3.1-70B-Instruct": ("70.6B", HUB),
    "meta-llama/Llama-3.3-70B-Instruct": ("70.6B", HUB),
    "meta-llama/Llama-3.2-1B": ("1.24B", HUB + " (the model card truncates to 1.23B)"),
    "meta-llama/Llama-3.2-1B-Instruct": ("1.24B", HUB + " (the model card truncates to 1.23B)"),
    "meta-llama/Llama-3.2-3B": ("3.21B", "Llama 3.2 model card, parameter table"),
    "meta-llama/Llama-3.2-3B-Instruct": ("3.21B", "Llama 3.2 model card, parameter table"),
    "gradientai/Llama-3-8B-Instruct-262k": ("8.03B", HUB),
    "codellama/CodeLlama-7b-hf": ("6.74B", HUB),
    "codellama/CodeLlama-13b-hf": ("13.0B", HUB),
    "codellama/CodeLlama-34b-hf": ("33.7B", HUB),
    "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T": ("1,100,048,384", "model.safetensors of the hub repository (tests/test_counts.py)"),
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": ("1.1B", "TinyLlama model card"),
    "01-ai/Yi-34B": ("34.4B", HUB),
    "HuggingFaceTB/SmolLM2-135M": ("135M", "SmolLM2 model card"),
    "HuggingFaceTB/SmolLM2-360M": ("362M", HUB),
    "HuggingFaceTB/SmolLM2-1.7B": ("1.71B", HUB),
    # Mistral
    "mistralai/Mistral-7B-v0.1": ("7,241,732,096", KERAS.format("mistral/mistral") + " mistral_7b_en"),
    "mistralai/Mistral-7B-v0.3": ("7,248,023,552", KERAS.format("mistral/mistral") + " mistral_0.3_7b_en"),
    "mistralai/Mistral-Nemo-Base-2407": ("12.2B", HUB),
    "mistralai/Mixtral-8x7B-v0.1": ("46,702,792,704", KERAS.format("mixtral/mixtral") + " mixtral_8_7b_en"),
    "mistralai/Mixtral-8x22B-v0.1": ("141B", "mistral.ai, 'Cheaper, Better, Faster, Stronger' (141B total, 39B active)"),
    # DeepSeek
    "deepseek-ai/DeepSeek-V2-Lite": ("15.7B", "DeepSeek-V2 paper, arXiv 2405.04434, and model card (V2-Lite: 15.7B total, 2.4B active)"),
    "deepseek-ai/DeepSeek-V2-Lite-Chat": ("15.7B", "DeepSeek-V2 paper, arXiv 2405.04434, and model card (V2-Lite: 15.7B total, 2.4B active)"),
    # Qwen
    "Qwen/Qwen2-0.5B": ("0.49B", "Qwen2 model card"),
    "Qwen/Qwen2-7B-Instruct": ("7.62B", HUB),
    "Qwen/Qwen2-72B-Instruct": ("72.7B", HUB),
    "Qwen/Qwen2.5-0.5B": ("494,032,768", KERAS.format("qwen/qwen") + " qwen2.5_0.5b_en"),
    "Qwen/Qwen2.5-1.5B": ("1,543,714,304", KERAS.format("qwen/qwen") + " qwen2.5_math_1.5b_en (the same architecture)"),
    "Qwen/Qwen2.5-3B": ("3,085,938,688", KERAS.format("qwen/qwen") + " qwen2.5_3b_en"),
    "Qwen/Qwen2.5-3B-Instruct": ("3,085,938,688", KERAS.format("qwen/qwen") + " qwen2.5_coder_instruct_3b (the same architecture)"),
    "Qwen/Qwen2.5-7B": ("7,615,616,512", KERAS.format("qwen/qwen") + " qwen2.5_math_7b_en (the same architecture)"),
    "Qwen/Qwen2.5-14B": ("14.8B", HUB + " (the model card truncates to 14.7B)"),
    "Qwen/Qwen2.5-32B": ("32,763,876,352", KERAS.format("qwen/qwen") + " qwen2.5_instruct_32b_en"),
    "Qwen/Qwen2.5-72B": ("72,706,203,648", KERAS.format("qwen/qwen") + " qwen2.5_instruct_72b_en"),
    "Qwen/Qwen3-0.6B": ("596,049,920", KERAS.format("qwen3/qwen3") + " qwen3_0.6b_en"),
    "Qwen/Qwen3-1.7B": ("1,720,574,976", KERAS.format("qwen3/qwen3") + " qwen3_1.7b_en"),
    "Qwen/Qwen3-4B": ("4,022,468,096", KERAS.format("qwen3/qwen3") + " qwen3_4b_en"),
    "Qwen/Qwen3-4B-Instruct-2507": ("4.02B", "Qwen3-4B-Instruct-2507 model card (4.0B; the Qwen3-4B preset 4,022,468,096)"),
    "Qwen/Qwen3-8B": ("8,190,735,360", KERAS.format("qwen3/qwen3") + " qwen3_8b_en"),
    "Qwen/Qwen3-14B": ("14,768,307,200", KERAS.format("qwen3/qwen3") + " qwen3_14b_en"),
    "Qwen/Qwen3-32B": ("32,762,123,264", KERAS.format("qwen3/qwen3") + " qwen3_32b_en"),
    "Qwen/Qwen3-30B-A3B": ("30.5B", "Qwen3-30B-A3B model card (30.5B total, 3.3B activated)"),
    "allenai/OLMoE-1B-7B-0924": ("6.9B", "OLMoE paper, arXiv 2409.02060 (6.9B total, 1.3B active)"),
    "openai/gpt-oss-20b": ("20.9B", "gpt-oss model card, arXiv 2508.10925 (20.9B total, 3.6B active)"),
    "openai/gpt-oss-120b": ("116.8B", "gpt-oss model card, arXiv 2508.10925 (116.8B total, 5.1B active)"),
    # Gemma
    "google/gemma-2b": ("2,506,172,416", KERAS.format("gemma/gemma") + " gemma_2b_en"),
    "google/gemma-7b": ("8,537,680,896", KERAS.format("gemma/gemma") + " gemma_7b_en"),
    "google/gemma-2-2b": ("2,614,341,888", KERAS.format("gemma/gemma") + " gemma2_2b_en"),
    "google/gemma-2-2b-jpn-it": ("2,614,341,888", KERAS.format("gemma/gemma") + " gemma2_instruct_2b_en (the same architecture)"),
    "google/gemma-2-9b": ("9,241,705,984", KERAS.format("gemma/gemma") + " gemma2_9b_en"),
    "google/gemma-2-27b": ("27,227,128,320", KERAS.format("gemma/gemma") + " gemma2_27b_en"),
    "google/gemma-3-1b-it": ("999,885,952", KERAS.format("gemma3/gemma3") + " gemma3_instruct_1b"),
    # Phi-3 family
    "microsoft/Phi-3-mini-4k-instruct": ("3,821,079,552", KERAS.format("phi3/phi3") + " phi3_mini_4k_instruct_en"),
    "microsoft/Phi-3.5-mini-instruct": ("3,821,079,552", KERAS.format("phi3/phi3") + " phi3_mini_128k_instruct_en (the same architecture)"),
    "microsoft/Phi-3-medium-4k-instruct": ("14B", "Phi-3 technical report, arXiv 2404.14219 (phi-3-medium, 14B)"),
    "microsoft/Phi-4-mini-instruct": ("3.8B", "Phi-4-mini-instruct model card (3.8B parameters)"),
}


def _tolerance(figure: str) -> tuple[float, float]:
    """(value, allowed error): half a unit of the figure's last written digit."""
    if re.fullmatch(r"[\d,]+", figure):
        return float(figure.replace(",", "")), 0.0
    number, unit = re.fullmatch(r"([\d.]+)([MB])", figure).groups()
    scale = {"M": 1e6, "B": 1e9}[unit]
    decimals = len(number.split(".")[1]) if "." in number else 0
    return float(number) * scale, 0.5 * 10 ** -decimals * scale


def test_every_entry_has_a_published_count():
    assert sorted(PUBLISHED) == sorted(MODEL_CONFIGS)


def test_catalog_breadth():
    assert len(MODEL_CONFIGS) >= 60


@pytest.mark.parametrize("hub_id", sorted(PUBLISHED))
def test_count_matches_publication(hub_id):
    figure, _source = PUBLISHED[hub_id]
    value, allowed = _tolerance(figure)
    counted = catalog_spec(hub_id).base_params
    assert abs(counted - value) <= allowed, f"{hub_id}: counted {counted:,}, published {figure}"


def test_tolerance_follows_the_written_rounding():
    assert _tolerance("8.03B") == pytest.approx((8.03e9, 0.005e9))
    assert _tolerance("141B") == (141e9, 0.5e9)
    assert _tolerance("2,506,172,416") == (2506172416.0, 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("hub_id", sorted(MODEL_CONFIGS))
def test_count_matches_the_meta_device_model(hub_id):
    """The planner's analytic count equals the parameters of the model transformers builds."""
    import torch
    import transformers

    config = transformers.AutoConfig.for_model(**MODEL_CONFIGS[hub_id]["config"])
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert catalog_spec(hub_id).base_params == sum(p.numel() for p in model.parameters())


def test_models_lists_the_catalog():
    result = CliRunner().invoke(cli, ["models", "--json"])
    assert result.exit_code == 0, result.output
    listed = {hub_id for hub_id in MODEL_CONFIGS if f'"{hub_id}"' in result.output}
    assert len(listed) == len(MODEL_CONFIGS) >= 60


@pytest.mark.parametrize("hub_id", sorted(MODEL_CONFIGS))
def test_estimate_offline_on_a_t4(hub_id, monkeypatch):
    """`estimate --model X --gpu t4` answers from the catalog alone: the hub is never asked."""

    def no_network(*args, **kwargs):
        raise AssertionError("the catalog path must not fetch anything")

    monkeypatch.setattr("vramplan.planner.catalog.remote.fetch_config", no_network)
    alias = MODEL_CONFIGS[hub_id]["aliases"][0]
    result = CliRunner().invoke(cli, ["estimate", "--model", alias, "--gpu", "t4", "--method", "qlora", "--targets", "attention"])
    assert result.exit_code == 0, result.output
    assert hub_id in result.output
