"""gpt-oss: counts against the meta-built transformers model and peft, and its activation terms
against what transformers 5's GptOss layer really saves for backward (tensor by tensor).

Quirks (transformers 5 `modeling_gpt_oss.py`): biases on q/k/v/o, the router and every expert; a
sink logit per head; eager attention only; experts stored transposed (E, H, 2I), whose gate_up gets
rank r from peft (not 2r: it was never two Linears); peft's all-linear reaches the attention only.
"""

import pytest

from vramplan.calibrate.probe_models import PROBE_MODELS
from vramplan.planner.architectures import spec_from_config
from vramplan.planner.catalog import catalog_spec
from vramplan.planner.estimator import estimate
from vramplan.planner.specs import RunConfig
from vramplan.planner.targets import resolve_targets

TINY = {
    "model_type": "gpt_oss", "hidden_size": 64, "intermediate_size": 24, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 256,
    "num_local_experts": 4, "num_experts_per_tok": 2, "layer_types": ["sliding_attention", "full_attention"],
    "pad_token_id": 1, "eos_token_id": 0, "bos_token_id": None,
}


def _meta_model(config: dict):
    import torch
    import transformers

    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**config), attn_implementation="eager")


def test_counts_match_the_meta_model():
    spec = spec_from_config(TINY, "tiny")
    model = _meta_model(TINY)
    assert sum(p.numel() for p in model.parameters()) == spec.base_params
    experts = model.model.layers[0].mlp.experts
    assert tuple(experts.gate_up_proj.shape) == (4, 64, 48)  # transposed: (E, H, 2I)
    # router weight + bias, then per expert gate_up, down and their biases
    assert spec.expert_params == 2 * (4 * 64 + 4 + 4 * (64 * 48 + 48 + 24 * 64 + 64))
    assert spec.attention_sinks and not spec.sdpa and spec.linear("q_proj").bias


def test_transformers_refuses_sdpa():
    """The premise of `sdpa=False`: a `--attention sdpa` run is built (and estimated) eager."""
    import transformers

    with pytest.raises(ValueError, match="scaled_dot_product_attention"):
        transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**TINY), attn_implementation="sdpa")


@pytest.mark.parametrize("targets", [("attention",), ("gate_up_proj", "down_proj"), ("router",), ("all-linear",), ("mlp",)])
def test_trainable_params_match_peft(targets):
    import peft

    from vramplan.calibrate.adapters.peft_lora import lora_target_kwargs

    spec = spec_from_config(TINY, "tiny")
    model = _meta_model(TINY)
    kwargs = lora_target_kwargs(model, targets, 8, 16)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, **kwargs))
    want = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert estimate(spec, RunConfig(method="lora", rank=8, targets=targets, dropout=0.0)).trainable_params == want


def test_peft_all_linear_is_the_attention_only():
    """peft's own all-linear wraps q/k/v/o and nothing of the router or experts (no nn.Linear there)."""
    import peft

    lora = peft.get_peft_model(_meta_model(TINY), peft.LoraConfig(r=8, target_modules="all-linear"))
    wrapped = {name.split(".")[-4] for name, p in lora.named_parameters() if p.requires_grad}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj"}
    spec = spec_from_config(TINY, "tiny")
    assert resolve_targets(spec, ("all-linear",)) == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert resolve_targets(spec, ("mlp",)) == ("router", "gate_up_proj", "down_proj")


def test_catalog_qlora_has_experts_terms():
    spec = catalog_spec("openai/gpt-oss-20b")
    assert (spec.num_experts, spec.experts_per_token, spec.vocab_size) == (32, 4, 201088)
    terms = estimate(spec, RunConfig(method="qlora", targets=("attention",))).breakdown.by_name()
    assert terms["experts/weights"] == 4 * spec.expert_params  # bf16-dequantized experts, upcast by kbit prep
    assert terms["activations/experts_backward"] > 0


def _saved_per_layer(config: dict, run: RunConfig, layer: int) -> int:
    """Bytes of the distinct storages autograd saves inside decoder layer `layer` (no checkpointing)."""
    import torch

    from vramplan.calibrate.model_build import build_model

    torch.manual_seed(0)
    model = build_model(config, run)
    layers = [m for name, m in model.named_modules() if name.endswith(f"layers.{layer}")]
    inside = [False]
    layers[0].register_forward_pre_hook(lambda *a: inside.__setitem__(0, True))
    layers[0].register_forward_hook(lambda *a: inside.__setitem__(0, False))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    # rotary cos/sin are made once per forward and shared by the layers (the planner's activations/inputs)
    rotary = next(m for name, m in model.named_modules() if name.endswith("rotary_emb"))
    rotary.register_forward_hook(lambda m, a, out: params.update(t.untyped_storage().data_ptr() for t in out))
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if inside[0] and ptr not in params:
            seen.setdefault(ptr, t.untyped_storage().nbytes())
        return t

    ids = torch.randint(0, config["vocab_size"], (run.batch, run.seq_len))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids)
    return sum(seen.values())


@pytest.mark.slow
@pytest.mark.parametrize("method,targets", [("lora", ("attention",)), ("full", ("all-linear",)), ("lora", ("gate_up_proj", "down_proj"))])
def test_layer_terms_match_saved_tensors(method, targets):
    """Sink-softmax scores (seq + 1 columns, 16-bit), q and repeated k/v, the clamped SwiGLU's 6I per
    routed row, the top-k softmax, the fp32 x̂ of a trainable norm, rank-r merged expert factors: the
    planner's layer equals the saved storages of a middle layer, up to the grouped-mm offsets (int32 x E)."""
    from vramplan.planner.activations import layer_activations
    from vramplan.planner.dtypes import dtype_plan

    config = PROBE_MODELS["probe-gpt-oss"]
    spec = spec_from_config(config, "probe-gpt-oss")
    run = RunConfig(device_kind="cpu", precision="bf16", batch=1, seq_len=128, dropout=0.0, method=method, targets=targets, grad_ckpt=False)
    adapted = resolve_targets(spec, targets) if run.method_record.adapter else ()
    planned = layer_activations(spec, run, dtype_plan(run), adapted).total
    measured = _saved_per_layer(config, run, 1)
    assert 0 <= measured - planned <= 4 * spec.num_experts
