"""Mixture-of-experts families: counts match the meta-built transformers model and peft.

transformers 5 keeps a layer's experts as two fused 3-D parameters and the router as a
TopKRouter weight; peft 0.21's `all-linear` adapts those too (through `target_parameters`).
"""

import pytest

from vramplan.planner.architectures import spec_from_config
from vramplan.planner.errors import ConfigError, UnknownModelError
from vramplan.planner.estimator import estimate
from vramplan.planner.families import FAMILIES
from vramplan.planner.specs import RunConfig
from vramplan.planner.targets import resolve_targets

# gpt-oss (transposed experts with biases, no transformers-4 names) is checked in tests/test_gpt_oss.py
MOE = sorted(key for key, family in FAMILIES.items() if family.moe is not None and key != "gpt_oss")
MOE = [key for key in MOE if key != "deepseek_v2"]  # MLA, dense layers, shared experts: tests/test_deepseek_v2.py
TINY = {
    "hidden_size": 64, "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 256, "num_experts_per_tok": 2,
}
EXPERTS_KEY = {"olmoe": "num_experts", "qwen3_moe": "num_experts", "mixtral": "num_local_experts"}


def _config(model_type: str) -> dict:
    config = {"model_type": model_type, **TINY, EXPERTS_KEY[model_type]: 4}
    if model_type == "qwen3_moe":  # its experts read moe_intermediate_size; intermediate_size is unused
        config.update(intermediate_size=96, moe_intermediate_size=24, head_dim=16)
    return config


def _meta_model(config: dict):
    import torch
    import transformers

    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**config))


def test_moe_families_registered():
    assert MOE == ["mixtral", "olmoe", "qwen3_moe"]


@pytest.mark.slow
@pytest.mark.parametrize("model_type", MOE)
def test_base_params_match_the_torch_model(model_type):
    config = _config(model_type)
    spec = spec_from_config(config, "tiny")
    model = _meta_model(config)
    assert sum(p.numel() for p in model.parameters()) == spec.base_params
    experts = model.model.layers[0].mlp.experts
    assert tuple(experts.gate_up_proj.shape) == (4, 2 * 24, 64) and tuple(experts.down_proj.shape) == (4, 64, 24)
    assert (spec.num_experts, spec.experts_per_token, spec.expert_intermediate_size) == (4, 2, 24)
    assert spec.intermediate_size == 2 * 24  # k experts per token: the activation width
    assert spec.expert_params == 2 * (4 * 64 + 4 * 3 * 64 * 24)


@pytest.mark.slow
@pytest.mark.parametrize("targets", [("attention",), ("gate_up_proj", "down_proj"), ("all-linear",)])
@pytest.mark.parametrize("model_type", MOE)
def test_trainable_params_match_peft(model_type, targets):
    import peft

    from vramplan.calibrate.adapters.peft_lora import lora_target_kwargs

    config = _config(model_type)
    spec = spec_from_config(config, "tiny")
    model = _meta_model(config)
    # as the model builder passes them (calibrate/adapters/peft_lora.py)
    kwargs = lora_target_kwargs(model, targets, 8, 16)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, **kwargs))
    want = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert estimate(spec, RunConfig(method="lora", rank=8, targets=targets, dropout=0.0)).trainable_params == want


# the transformers-4 names of the experts, which peft 0.21 converts to target_parameters itself
V4_EXPERT_NAMES = {"mixtral": ["w1", "w2", "w3"], "olmoe": ["gate_proj", "up_proj", "down_proj"], "qwen3_moe": ["gate_proj", "up_proj", "down_proj"]}


@pytest.mark.slow
@pytest.mark.parametrize("model_type", MOE)
def test_experts_count_as_peft_converts_them(model_type):
    """peft's own path for the experts (old Linear names -> fused parameters, gate_up at rank 2r) trains
    what the planner counts for `--targets gate_up_proj,down_proj`."""
    import peft

    config = _config(model_type)
    spec = spec_from_config(config, "tiny")
    lora = peft.get_peft_model(_meta_model(config), peft.LoraConfig(r=8, lora_alpha=16, target_modules=V4_EXPERT_NAMES[model_type]))
    want = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert want == estimate(spec, RunConfig(method="lora", rank=8, targets=("gate_up_proj", "down_proj"), dropout=0.0)).trainable_params


def test_targets_name_the_router_and_experts():
    spec = spec_from_config(_config("olmoe"), "tiny")
    assert resolve_targets(spec, ("all-linear",)) == ("q_proj", "k_proj", "v_proj", "o_proj", "gate", "gate_up_proj", "down_proj")
    assert resolve_targets(spec, ("mlp",)) == ("gate", "gate_up_proj", "down_proj")
    assert resolve_targets(spec, ("down",)) == ("down_proj",)


def test_qlora_keeps_experts_unquantized():
    """bitsandbytes replaces nn.Linear only; prepare_model_for_kbit_training upcasts the rest to fp32."""
    spec = spec_from_config(_config("olmoe"), "tiny")
    terms = estimate(spec, RunConfig(method="qlora", targets=("attention",))).breakdown.by_name()
    packed = spec.num_layers * sum(linear.in_features * linear.out_features for linear in spec.linears) // 2
    assert terms["weights/base"] == packed
    assert terms["experts/weights"] == 4 * spec.expert_params  # fp32: all E experts resident


def test_moe_terms():
    """Experts' weights on their own line; the sparse layer's saved tensors follow top-k routing."""
    from vramplan.planner.activations import layer_activations
    from vramplan.planner.dtypes import dtype_plan

    spec = spec_from_config(_config("olmoe"), "tiny")
    run = RunConfig(method="lora", targets=("attention",), batch=2, seq_len=64)
    terms = estimate(spec, run).breakdown.by_name()
    assert terms["experts/weights"] == 2 * spec.expert_params
    assert terms["weights/base"] == 2 * (spec.base_params - spec.expert_params)
    assert terms["activations/experts_backward"] > 0
    t, k, h, e = 128, 2, 64, 4
    # softmax fp32, topk indices, dispatch indices, down outputs x routing weights (bf16)
    assert layer_activations(spec, run, dtype_plan(run), ("q_proj",)).moe == 4 * t * e + 8 * t * k + 16 * k * t + 2 * k * t * (h + 1)
    full = estimate(spec, RunConfig(method="full", batch=2, seq_len=64)).breakdown.by_name()
    assert full["grads/upper_layers"] > 0


def test_dora_on_experts_is_refused():
    spec = spec_from_config(_config("olmoe"), "tiny")
    with pytest.raises(ConfigError, match="DoRA on the router or fused experts"):
        estimate(spec, RunConfig(method="dora", targets=("all-linear",), dropout=0.0)).breakdown.by_name()


def test_mixed_dense_and_sparse_layers_are_refused():
    with pytest.raises(UnknownModelError, match="mixes dense and sparse layers"):
        spec_from_config({**_config("qwen3_moe"), "mlp_only_layers": [0]}, "tiny")


def test_moe_estimates_sum_their_terms():
    """No fitted-sums fast path for MoE (not proven exact): the terms are summed."""
    from vramplan.planner.estimator import run_shape

    spec = spec_from_config(_config("qwen3_moe"), "tiny")
    assert run_shape(spec, RunConfig(method="lora", targets=("all-linear",), dropout=0.0), 1.0).sums is None


def test_cli_counts_a_local_moe_config(tmp_path):
    import json

    from click.testing import CliRunner

    from vramplan.cli import cli

    path = tmp_path / "config.json"
    path.write_text(json.dumps(_config("olmoe")))
    ok = CliRunner().invoke(cli, ["estimate", "--model", str(path), "--method", "lora", "--targets", "all-linear", "--dropout", "0"])
    assert ok.exit_code == 0, ok.output
    assert "gate,gate_up_proj,down_proj" in ok.output.replace("\n", "")
    # at the default dropout the experts' refusal turns it to 0, with a note; a --dropout given is refused
    default = CliRunner().invoke(cli, ["estimate", "--model", str(path), "--method", "lora", "--targets", "all-linear"])
    assert default.exit_code == 0, default.output
    assert "note: --dropout 0 (not the default 0.05): peft cannot put dropout on the router or fused experts" in default.output
    assert "dropout=0 " in default.output
    bad = CliRunner().invoke(cli, ["estimate", "--model", str(path), "--method", "lora", "--targets", "all-linear", "--dropout", "0.05"])
    assert bad.exit_code == 1
    assert bad.output.strip().splitlines()[-1] == (
        "Error: --dropout 0.05: peft cannot put dropout on the router or fused experts (gate, gate_up_proj, down_proj); "
        "pass --dropout 0, or --targets attention"
    )


def test_catalog_entries_and_advisor():
    """The catalog's MoE entries; the advisor skips what peft refuses on fused experts."""
    from vramplan.planner.advisor import recommend
    from vramplan.planner.catalog import catalog_spec, resolve_gpu

    spec = catalog_spec("Qwen/Qwen3-30B-A3B")
    assert (spec.base_params, spec.num_experts, spec.experts_per_token) == (30_532_122_624, 128, 8)
    assert catalog_spec("allenai/OLMoE-1B-7B-0924").base_params == 6_919_161_856
    recs = recommend(spec, resolve_gpu("h100"), 2048, top=3)
    assert recs and all(rec.estimate.run.targets == ("attention",) for rec in recs)


def test_bottleneck_adapters_refused_on_moe():
    spec = spec_from_config(_config("olmoe"), "tiny")
    with pytest.raises(ConfigError, match="no dense mlp output Linear"):
        estimate(spec, RunConfig(method="adapter"))


@pytest.mark.slow
@pytest.mark.parametrize("hub_id", ["Qwen/Qwen3-30B-A3B", "allenai/OLMoE-1B-7B-0924", "mistralai/Mixtral-8x7B-v0.1"])
def test_catalog_moe_matches_peft(hub_id):
    """Full-size configs on the meta device, targets as the model builder passes them to peft."""
    import peft
    import torch
    import transformers

    from vramplan.calibrate.adapters.peft_lora import lora_target_kwargs
    from vramplan.planner.catalog import catalog_spec
    from vramplan.planner.catalog.models import MODEL_CONFIGS
    from vramplan.planner.targets import adapter_params

    spec = catalog_spec(hub_id)

    for targets in (("all-linear",), ("attention",), ("gate_up_proj", "down_proj")):  # the last: the experts alone
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**MODEL_CONFIGS[hub_id]["config"]))
            assert sum(p.numel() for p in model.parameters()) == spec.base_params
            kwargs = lora_target_kwargs(model, targets, 16, 32)
            lora = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, **kwargs))
        assert lora.get_nb_trainable_parameters()[0] == adapter_params(spec, resolve_targets(spec, targets), 16, False), targets


@pytest.mark.slow
def test_worst_case_routing_needs_the_same_memory(monkeypatch):
    """`routing.worst_case_extra_bytes` is 0: every token sent to the same k experts (router zeroed, so
    top-k takes the same experts for all) peaks at exactly the bytes of the model's own routing."""
    import torch

    import vramplan.calibrate.cpu_probe as cpu_probe
    from vramplan.calibrate.probe_models import PROBE_MODELS

    run = RunConfig(device_kind="cpu", precision="bf16", batch=1, seq_len=128, dropout=0.0, method="lora", targets=("all-linear",), grad_ckpt=False)
    own = cpu_probe.measure_cpu(PROBE_MODELS["probe-mixtral"], run, steps=2)["steady_peak_bytes"]
    build, counts = cpu_probe.build_model, []

    def skewed(*args, **kwargs):
        model = build(*args, **kwargs)
        for name, module in model.named_modules():
            if name.endswith("mlp.gate") and hasattr(module, "weight"):
                with torch.no_grad():
                    module.weight.zero_()
                def count(m, i, o):
                    counts.append(torch.bincount(o[2].flatten(), minlength=8).tolist())  # no tensor outlives the step
                    handle.remove()

                handle = module.register_forward_hook(count)
                break  # the first layer's routing, seen in the first step only (the steady peak is measured after)
        return model

    monkeypatch.setattr(cpu_probe, "build_model", skewed)
    worst = cpu_probe.measure_cpu(PROBE_MODELS["probe-mixtral"], run, steps=2)["steady_peak_bytes"]
    assert sorted(counts[0])[-2:] == [128, 128] and sum(counts[0]) == 256  # all tokens on two experts
    assert worst == own
