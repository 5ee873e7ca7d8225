"""DeepSeek-V2 (-Lite): multi-head latent attention, a leading dense layer and shared experts.

Counts against the meta-built transformers 5 model and peft 0.21; the MLA terms against what autograd
saves in one layer of probe-deepseek-v2, tensor by tensor.
"""

import pytest

from vramplan.calibrate.probe_models import PROBE_MODELS
from vramplan.planner.activations import layer_activations
from vramplan.planner.architectures import spec_from_config
from vramplan.planner.catalog import catalog_spec
from vramplan.planner.catalog.models import MODEL_CONFIGS
from vramplan.planner.dtypes import dtype_plan
from vramplan.planner.errors import UnknownModelError
from vramplan.planner.estimator import estimate
from vramplan.planner.specs import RunConfig
from vramplan.planner.targets import resolve_targets

PROBE = PROBE_MODELS["probe-deepseek-v2"]
LITE = "deepseek-ai/DeepSeek-V2-Lite"
EXPERTS = ("gate_up_proj", "down_proj")


def _model(config: dict, meta: bool = True, **kwargs):
    import torch
    import transformers

    with torch.device("meta" if meta else "cpu"):
        return transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**config), **kwargs)


def test_layer_kinds_and_widths():
    spec = spec_from_config(PROBE, "probe")
    (dense, n_dense), (sparse, n_sparse) = spec.layer_kinds
    assert (n_dense, n_sparse, spec.dense_layers, spec.sparse_layers) == (1, 2, 1, 2)
    assert dense.num_experts == 0 and dense.intermediate_size == 512  # intermediate_size: the dense MLP
    # balanced routing: k x moe_intermediate_size, plus the shared experts' n_shared x moe_intermediate_size
    assert sparse.intermediate_size == 2 * 128 + 2 * 128 and sparse.shared_expert_intermediate_size == 256
    assert spec.head_dim == 48 + 16 and (spec.kv_lora_rank, spec.qk_rope_head_dim, spec.v_head_dim) == (64, 16, 48)
    shapes = {linear.name: (linear.in_features, linear.out_features, spec.linear_layers(linear)) for linear in spec.linears}
    assert shapes["q_proj"] == (256, 4 * 64, 3) and shapes["kv_a_proj_with_mqa"] == (256, 64 + 16, 3)
    assert shapes["kv_b_proj"] == (64, 4 * (48 + 48), 3) and shapes["o_proj"] == (4 * 48, 256, 3)
    assert shapes["mlp.gate_proj"] == (256, 512, 1) and shapes["mlp.shared_experts.down_proj"] == (256, 256, 2)


@pytest.mark.slow
@pytest.mark.parametrize("config", [PROBE, MODEL_CONFIGS[LITE]["config"]], ids=["probe", "lite"])
def test_counts_match_the_meta_model(config):
    import torch

    spec = spec_from_config(config, "x")
    model = _model(config)
    assert spec.base_params == sum(p.numel() for p in model.parameters())
    # what bitsandbytes would quantize: every nn.Linear in the layers (dense MLP and shared experts too)
    linears = sum(m.weight.numel() for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in name)
    assert spec.linear_params == linears
    assert spec.expert_params == sum(p.numel() for name, p in model.named_parameters() if ".mlp.experts." in name or ".mlp.gate." in name)


def test_lite_is_counted_as_published():
    assert catalog_spec(LITE).base_params == 15_706_484_224  # 15.7B total (DeepSeek-V2 paper)


@pytest.mark.slow
@pytest.mark.parametrize("targets", [("attention",), EXPERTS, ("all-linear",), ("mlp",), ("kv_b", "o")])
def test_trainable_params_match_peft(targets):
    import peft

    from vramplan.calibrate.adapters.peft_lora import lora_target_kwargs

    spec = spec_from_config(PROBE, "probe")
    model = _model(PROBE)
    kwargs = lora_target_kwargs(model, targets, 8, 16)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, **kwargs))
    want = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert estimate(spec, RunConfig(method="lora", rank=8, targets=targets, dropout=0.0)).trainable_params == want


@pytest.mark.slow
def test_peft_all_linear_leaves_the_dense_and_shared_mlp():
    """peft 0.21 converts DeepSeek's gate_proj/up_proj/down_proj names to the fused experts, so its
    all-linear wraps MLA's four Linears, the router and the experts, and no MLP Linear."""
    import peft

    lora = peft.get_peft_model(_model(PROBE), peft.LoraConfig(r=8, target_modules="all-linear"))
    wrapped = {name.split(".lora_A")[0].split("layers.")[1] for name, _ in lora.named_parameters() if ".lora_A." in name}
    assert wrapped == {f"{i}.self_attn.{p}" for i in range(3) for p in ("q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj")} | {
        f"{i}.mlp.{p}" for i in (1, 2) for p in ("gate", "experts", "experts.base_layer")
    }
    spec = spec_from_config(PROBE, "probe")
    assert resolve_targets(spec, ("all-linear",)) == ("q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate", "gate_up_proj", "down_proj")


@pytest.mark.slow
def test_catalog_lite_matches_peft():
    import peft

    from vramplan.calibrate.adapters.peft_lora import lora_target_kwargs
    from vramplan.planner.targets import adapter_params

    spec = catalog_spec(LITE)
    for targets in (("all-linear",), ("attention",), EXPERTS):
        model = _model(MODEL_CONFIGS[LITE]["config"])
        kwargs = lora_target_kwargs(model, targets, 16, 32)
        lora = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, **kwargs))
        assert lora.get_nb_trainable_parameters()[0] == adapter_params(spec, resolve_targets(spec, targets), 16, False), targets


def test_mlp_linears_are_not_targets():
    spec = spec_from_config(PROBE, "probe")
    assert resolve_targets(spec, ("mlp",)) == ("gate", "gate_up_proj", "down_proj")  # peft's names for them
    with pytest.raises(Exception, match="not in probe"):
        resolve_targets(spec, ("mlp.shared_experts.gate_proj",))


def test_q_lora_rank_is_refused():
    with pytest.raises(UnknownModelError, match="q_lora_rank"):
        spec_from_config({**PROBE, "q_lora_rank": 32}, "v2")


def _saved_by_module(layer_index: int) -> dict[str, int]:
    """Bytes autograd saves in one probe layer (bf16, frozen, input needing grad), by submodule."""
    import torch

    torch.manual_seed(0)
    model = _model(PROBE, meta=False, dtype=torch.bfloat16, attn_implementation="sdpa").requires_grad_(False)
    layer = model.model.layers[layer_index]
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    stack, seen, saved = [], set(), {}
    for name, module in layer.named_modules():
        module.register_forward_pre_hook(lambda m, a, n=name: stack.append(n))
        module.register_forward_hook(lambda m, a, o: stack.pop() and None)  # None: the output stays

    def pack(tensor):
        key = tensor.untyped_storage().data_ptr()
        # the rotary freqs_cis are made once per model (activations/inputs), not per layer
        if key not in seen and key not in params and not tensor.is_complex():
            seen.add(key)
            saved[stack[-1]] = saved.get(stack[-1], 0) + tensor.untyped_storage().nbytes()
        return tensor

    x = torch.randn(2, 256, 256, dtype=torch.bfloat16, requires_grad=True)
    positions = torch.arange(256)[None].expand(2, 256)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x, position_ids=positions, position_embeddings=model.model.rotary_emb(x, positions))
    return saved


@pytest.mark.slow
@pytest.mark.parametrize("layer_index", [0, 1])
def test_mla_terms_match_saved_tensors(layer_index):
    """CPU SDPA runs the math path for MLA (v's head dim differs from q/k's): fp32 q, k, v and
    softmax probabilities, which the planner counts as attention + attention_scores; the latent norm
    keeps its fp32 input and rsqrt. The shared experts (layer 1) keep gate, up and act(gate)."""
    saved = _saved_by_module(layer_index)
    spec = spec_from_config(PROBE, "probe")
    view = spec.layer_kinds[0 if layer_index == 0 else 1][0]
    run = RunConfig(method="lora", device_kind="cpu", precision="bf16", batch=2, seq_len=256, dropout=0.0)
    planned = layer_activations(view, run, dtype_plan(run), ())
    assert sum(v for k, v in saved.items() if k.startswith("self_attn")) == planned.attention + planned.attention_scores
    assert saved["input_layernorm"] + saved["post_attention_layernorm"] == planned.norms
    mlp = sum(v for k, v in saved.items() if k.startswith("mlp.shared_experts") or (layer_index == 0 and k.startswith("mlp")))
    shared_or_dense = 2 * 128 if layer_index == 1 else 512  # n_shared x moe_intermediate_size, or intermediate_size
    assert mlp == 3 * 2 * 512 * shared_or_dense


def test_estimate_has_expert_terms_and_both_layer_kinds():
    spec = catalog_spec(LITE)
    run = RunConfig(method="qlora", dropout=0.0, grad_ckpt=False)
    terms = {t.name: t for t in estimate(spec, run).breakdown.terms}
    assert terms["experts/weights"].bytes > 0
    assert "1 layers x" in terms["activations/layers"].note and "26 layers x" in terms["activations/layers"].note
