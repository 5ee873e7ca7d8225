"""Exact parameter counts: the design notes' acceptance figures and PEFT's own counts."""

import pytest

from vramplan.planner.catalog import catalog_spec
from vramplan.planner.catalog.models import MODEL_CONFIGS
from vramplan.planner.families import family_of
from vramplan.planner.targets import adapter_params, resolve_targets

ALL7 = ("q", "k", "v", "o", "gate", "up", "down")


def _lora(hub_id, targets, rank=16, dora=False):
    spec = catalog_spec(hub_id)
    return adapter_params(spec, resolve_targets(spec, targets), rank, dora)


def test_llama3_8b_acceptance():
    assert catalog_spec("meta-llama/Meta-Llama-3-8B").base_params == 8_030_261_248
    assert _lora("meta-llama/Meta-Llama-3-8B", ALL7) == 41_943_040


def test_llama2_7b_acceptance():
    assert _lora("meta-llama/Llama-2-7b-hf", ALL7) == 39_976_960
    assert _lora("meta-llama/Llama-2-7b-hf", ("q", "k", "v", "o")) == 16_777_216


PUBLISHED = {  # parameter counts published with the models (model cards / safetensors index)
    "meta-llama/Llama-2-7b-hf": 6_738_415_616,
    "mistralai/Mistral-7B-v0.1": 7_241_732_096,
    "Qwen/Qwen2.5-7B": 7_615_616_512,
    "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T": 1_100_048_384,
    "google/gemma-2-9b": 9_241_705_984,
    "microsoft/Phi-3-mini-4k-instruct": 3_821_079_552,
}


@pytest.mark.parametrize("hub_id,expected", sorted(PUBLISHED.items()))
def test_published_base_counts(hub_id, expected):
    assert catalog_spec(hub_id).base_params == expected


TARGET_SETS = [("all-linear",), ("attention",), ("mlp",), ("o", "down", "lm_head")]


def _peft_counts(config: dict, targets: tuple[str, ...], rank: int, dora: bool):
    import peft
    import torch
    import transformers

    from vramplan.planner.architectures import spec_from_config

    spec = spec_from_config(config, "x")
    modules = list(resolve_targets(spec, targets))
    hf_config = transformers.AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf_config)
        base = sum(p.numel() for p in model.parameters())
        lora = peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=modules, use_dora=dora)
        wrapped = peft.get_peft_model(model, lora)
        trainable, _ = wrapped.get_nb_trainable_parameters()
    return base, trainable


# MoE entries: peft adapts fused experts through `target_parameters`, which its "all-linear" sets
# and a list of module names does not; tests/test_moe.py checks them the way `vramplan run` builds them
DENSE = sorted(hub_id for hub_id, entry in MODEL_CONFIGS.items() if family_of(entry["config"]["model_type"]).moe is None)


@pytest.mark.slow
@pytest.mark.parametrize("hub_id", DENSE)
def test_catalog_matches_peft(hub_id):
    """Every catalog entry: base params and trainable params equal PEFT's count on the meta model."""
    config = MODEL_CONFIGS[hub_id]["config"]
    spec = catalog_spec(hub_id)
    for index, targets in enumerate(TARGET_SETS):
        rank, dora = (8, True) if index == 3 else (16, False)
        base, trainable = _peft_counts(config, targets, rank, dora)
        assert spec.base_params == base
        assert adapter_params(spec, resolve_targets(spec, targets), rank, dora) == trainable, targets
