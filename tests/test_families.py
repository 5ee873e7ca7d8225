"""A model family is one record: the planner and the model builder read it, and it matches torch.

Every registered family builds a meta model (no weights) from a tiny config whose Linear
modules, biases, norms and parameter count are the ones the record and the ModelSpec say; a
family registered only here (no transformers class) works end to end for `estimate`.
"""

import importlib
import json
import pkgutil

import pytest
from click.testing import CliRunner

from vramplan.planner import families as families_pkg
from vramplan.planner.architectures import spec_from_config
from vramplan.planner.catalog import catalog_spec, resolve_model
from vramplan.planner.catalog.models import MODEL_CONFIGS
from vramplan.planner.estimator import estimate
from vramplan.planner.families import FAMILIES, Family, Projection
from vramplan.planner.specs import Component, LinearSpec, RunConfig

# 32 heads: every family's default kv-head count (4, 8, 32) divides it
TINY = {
    "hidden_size": 128, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 32,
    "vocab_size": 160, "max_position_embeddings": 128, "pad_token_id": 0,  # Phi-3 pads with id 32000 by default
}
# every optional key the families read, set away from its usual default
EXPLICIT = {
    "num_key_value_heads": 2, "head_dim": 8, "attention_bias": True, "mlp_bias": True,
    "tie_word_embeddings": True, "final_logit_softcapping": None,
}
VARIANTS = {"defaults": {}, "explicit": EXPLICIT}
DENSE = sorted(key for key, family in FAMILIES.items() if family.moe is None)  # MoE families: tests/test_moe.py


def _config(model_type: str, variant: str) -> dict:
    config = {"model_type": model_type, **TINY, **VARIANTS[variant]}
    if model_type in ("gemma", "gemma2", "gemma3_text") and variant == "explicit":
        config["tie_word_embeddings"] = False  # Gemma ties by default: untie it here
    return config


def _meta_model(config: dict):
    import torch
    import transformers

    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**config))


def test_registry_is_keyed_by_model_type():
    assert list(FAMILIES) == ["llama", "mistral", "qwen2", "qwen3", "gemma2", "phi3", "olmoe", "qwen3_moe", "mixtral", "gemma", "gemma3_text", "deepseek_v2", "gpt_oss"]
    for key, family in FAMILIES.items():
        assert family.model_type == key


def test_one_module_per_family():
    """Adding a family is one module holding one record, plus its registry line."""
    shared = {"base", "layouts"}
    modules = sorted(info.name for info in pkgutil.iter_modules(families_pkg.__path__) if info.name not in shared)
    records = []
    for name in modules:
        module = importlib.import_module(f"{families_pkg.__name__}.{name}")
        found = [value for value in vars(module).values() if isinstance(value, Family)]
        assert len(found) == 1, (name, found)
        records.append(found[0])
    assert sorted(r.model_type for r in records) == sorted(FAMILIES)
    assert all(FAMILIES[r.model_type] is r for r in records)


def test_every_catalog_model_has_a_family():
    for hub_id, entry in MODEL_CONFIGS.items():
        spec = catalog_spec(hub_id)
        assert spec.family is FAMILIES[entry["config"]["model_type"]]
        assert spec.module_names() == tuple(p.name for p in spec.family.projections)


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("model_type", DENSE)
def test_record_matches_the_torch_model(model_type, variant):
    import torch

    config = _config(model_type, variant)
    family = FAMILIES[model_type]
    spec = spec_from_config(config, "tiny")
    model = _meta_model(config)
    layer = model.get_submodule(f"{family.layers_module}.0")

    found = {name: m for name, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}
    assert sorted(found) == sorted(f"{family.parent(p)}.{p.name}" for p in family.projections)
    for p in family.projections:
        module, linear = found[f"{family.parent(p)}.{p.name}"], spec.linear(p.name)
        assert (module.in_features, module.out_features, module.bias is not None) == (
            linear.in_features, linear.out_features, linear.bias), linear.name
    assert model.get_submodule(family.module_path(1, family.projections[0])) is not None

    layer_params = sum(p.numel() for p in layer.parameters())
    assert layer_params - spec.layer_linear_params == spec.norm_params_per_layer
    residual_norms = [m for m in layer.children() if getattr(m, "weight", None) is not None and m.weight.shape == (spec.hidden_size,)]
    assert len(residual_norms) == family.norms_per_layer
    assert hasattr(getattr(layer, family.attention_module), "q_norm") == family.qk_norm
    assert sum(p.numel() for p in model.parameters()) == spec.base_params
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert spec.tie_embeddings == tied
    assert spec.logit_softcap == bool(getattr(model.config, "final_logit_softcapping", None))
    assert (spec.num_kv_heads, spec.head_dim) == (model.config.num_key_value_heads, getattr(layer, family.attention_module).head_dim)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", DENSE)
def test_model_builder_reads_the_record(model_type):
    from vramplan.calibrate.model_build import decoder_linear_names, resolve_target_modules

    family = FAMILIES[model_type]
    model = _meta_model(_config(model_type, "defaults"))
    assert decoder_linear_names(model) == family.groups
    attention = [p.name for p in family.projections if p.group == "attention"]
    mlp = [p.name for p in family.projections if p.group == "mlp"]
    assert resolve_target_modules(model, ("attention",)) == attention
    assert resolve_target_modules(model, ("mlp", "lm_head")) == mlp + ["lm_head"]
    first = family.projections[0]
    assert resolve_target_modules(model, (first.short,)) == [first.name]
    assert list(resolve_targets_of(model_type, ("attention",))) == attention


def resolve_targets_of(model_type, targets):
    from vramplan.planner.targets import resolve_targets

    return resolve_targets(spec_from_config(_config(model_type, "defaults"), "tiny"), targets)


def test_fused_projections_take_their_own_short_names():
    spec = catalog_spec("microsoft/Phi-3-mini-4k-instruct")
    assert resolve_targets_of("phi3", ("qkv", "gate_up")) == ("qkv_proj", "gate_up_proj")
    assert spec.input_groups == {
        "attention_in": ("qkv_proj",), "attn_out": ("o_proj",), "mlp_in": ("gate_up_proj",), "mlp_prod": ("down_proj",),
    }


# a family no transformers class knows: the planner needs nothing but its record
TOY = Family(
    model_type="toy",
    title="Toy",
    projections=(
        Projection("wqkv", "attention", "attention_in", ("hidden",), ("q", "kv", "kv"), short="qkv"),
        Projection("wo", "attention", "attn_out", ("q",), ("hidden",), bias="attention_bias", short="o"),
        Projection("w13", "mlp", "mlp_in", ("hidden",), ("intermediate", "intermediate"), short="gate_up"),
        Projection("w2", "mlp", "mlp_prod", ("intermediate",), ("hidden",), short="down"),
    ),
    norms_per_layer=3,
    defaults=(("num_key_value_heads", 2), ("tie_word_embeddings", True)),
)
TOY_CONFIG = {"model_type": "toy", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
              "num_attention_heads": 4, "vocab_size": 300, "attention_bias": True}


@pytest.fixture
def toy_dir(tmp_path, monkeypatch):
    monkeypatch.setitem(FAMILIES, "toy", TOY)
    path = tmp_path / "toy"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(TOY_CONFIG))
    return path


def test_a_new_family_is_one_record(toy_dir):
    spec = resolve_model(str(toy_dir)).spec
    assert spec.source == "config.json"  # counted from the record, not inventoried on meta
    assert spec.family is TOY
    h, inter, q, kv = 64, 128, 64, 2 * 16
    layer = h * (q + 2 * kv) + (q * h + h) + h * 2 * inter + inter * h + 3 * h
    assert spec.base_params == 3 * layer + h + 300 * h  # tied: no lm_head
    assert spec.input_groups == {"attention_in": ("wqkv",), "attn_out": ("wo",), "mlp_in": ("w13",), "mlp_prod": ("w2",)}

    result = estimate(spec, RunConfig(method="lora", targets=("qkv", "o"), rank=4, batch=2, seq_len=64))
    assert result.trainable_params == 3 * 4 * ((h + q + 2 * kv) + (q + h))
    full = estimate(spec, RunConfig(method="full", batch=2, seq_len=64))
    assert full.trainable_params == spec.base_params


def test_a_new_family_through_the_cli(toy_dir):
    from vramplan.cli import cli

    result = CliRunner().invoke(cli, ["estimate", "--model", str(toy_dir), "--gpu", "t4", "--method", "lora",
                                      "--targets", "mlp", "--rank", "2", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["estimates"][0]["trainable_params"] == 3 * 2 * ((64 + 256) + (128 + 64))


def test_records_validate_themselves():
    with pytest.raises(ValueError, match="group 'ffn' is not one of attention, mlp"):
        Projection("w1", "ffn", "mlp_in", ("hidden",), ("intermediate",))
    with pytest.raises(ValueError, match="width 'heads' is not one of"):
        Projection("w1", "mlp", "mlp_in", ("heads",), ("intermediate",))
    with pytest.raises(ValueError, match="duplicate projection names"):
        Family("dup", "Dup", TOY.projections + TOY.projections[:1])
    with pytest.raises(ValueError, match="role 'eyes' is not one of"):
        Component("vision", "eyes", 1)


def test_a_model_is_made_of_components():
    spec = catalog_spec("Qwen/Qwen3-8B")
    (decoder,) = spec.components
    assert (decoder.role, decoder.family, decoder.num_layers) == ("decoder", "qwen3", spec.num_layers)
    assert decoder.linear_params == spec.linear_params
    assert spec.base_params == decoder.params

    from dataclasses import replace

    tower = Component("vision_tower", "vision", 2, (LinearSpec("fc1", 32, 64, True, "mlp"),), other_params_per_layer=64, shared_params=10)
    vlm = replace(spec, extra_components=(tower,))
    assert vlm.components[-1] is tower
    assert vlm.base_params == spec.base_params + 2 * (32 * 64 + 64 + 64) + 10
    assert vlm.linears == spec.linears and vlm.hidden_size == spec.hidden_size  # the decoder's fields stay


def test_inventoried_leftovers_are_their_own_component():
    spec = spec_from_config({"model_type": "llama", **TINY}, "tiny")
    from dataclasses import replace

    inventoried = replace(spec, model_type="not-a-family", extra_params=7)
    assert inventoried.family is None
    assert [c.name for c in inventoried.components] == ["decoder", "other"]
    assert inventoried.components[0].family == ""
    assert inventoried.base_params == spec.base_params + 7


def test_unknown_model_type_names_the_families():
    from vramplan.planner.errors import UnknownModelError

    with pytest.raises(UnknownModelError, match=r"not in the analytic families \(llama, mistral, qwen2, qwen3, gemma2, phi3, olmoe, qwen3_moe, mixtral, gemma, gemma3_text, deepseek_v2, gpt_oss\)"):
        spec_from_config({"model_type": "gpt2", **TINY}, "gpt2")


@pytest.mark.slow
def test_model_builder_without_a_record_reads_the_layer():
    from vramplan.calibrate.model_build import decoder_linear_names, resolve_target_modules

    from .test_inventory import GPT_NEOX

    model = _meta_model(GPT_NEOX)
    groups = {"query_key_value": "attention", "dense": "attention", "dense_h_to_4h": "mlp", "dense_4h_to_h": "mlp"}
    assert decoder_linear_names(model) == groups
    assert resolve_target_modules(model, ("mlp",)) == ["dense_h_to_4h", "dense_4h_to_h"]
