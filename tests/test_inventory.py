"""--model PATH: analytic families match the meta-built model; other architectures are inventoried."""

import json

import pytest

from vramplan.planner.catalog import resolve_model
from vramplan.planner.estimator import estimate
from vramplan.planner.specs import RunConfig

from .conftest import TINY_LLAMA

GPT_NEOX = {
    "model_type": "gpt_neox",
    "architectures": ["GPTNeoXForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "vocab_size": 300,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
}


def _meta_count(config):
    import torch
    import transformers

    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**config))
    return sum(p.numel() for p in model.parameters())


def test_local_llama_config_counts_exactly(tiny_config_dir):
    resolved = resolve_model(str(tiny_config_dir))
    assert resolved.spec.source == "config.json"
    assert resolved.spec.base_params == _meta_count(TINY_LLAMA)


@pytest.mark.slow
def test_unknown_family_is_inventoried_on_meta(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(GPT_NEOX))
    resolved = resolve_model(str(path))
    spec = resolved.spec
    assert spec.source == "meta-device inventory"
    assert spec.base_params == _meta_count(GPT_NEOX)
    assert spec.num_layers == 3
    assert "query_key_value" in spec.module_names()
    result = estimate(spec, RunConfig(method="lora", targets=("query_key_value",), rank=4, batch=2, seq_len=32))
    assert result.trainable_params == 3 * 4 * (64 + 3 * 64)
    assert result.breakdown.peak_allocated_bytes > spec.base_params * 2
