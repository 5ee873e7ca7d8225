"""Gemma (1)'s quirks, checked tensor by tensor against the planner's terms.

What a module saves for backward is read with `torch.autograd.graph.saved_tensors_hooks` on the
real transformers module built from `probe-gemma`'s config, counted once per storage (views
share one), parameters excluded, and compared with the byte count the planner's term gives.
"""

import pytest

torch = pytest.importorskip("torch")

from vramplan.calibrate.probe_models import PROBE_MODELS  # noqa: E402
from vramplan.planner.activations import _norm_saved_bytes  # noqa: E402
from vramplan.planner.architectures import spec_from_config  # noqa: E402
from vramplan.planner.dtypes import dtype_plan  # noqa: E402
from vramplan.planner.specs import RunConfig  # noqa: E402

CONFIG = PROBE_MODELS["probe-gemma"]
BATCH, SEQ = 2, 64


def _saved_bytes(module, x) -> int:
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        module(x)
    return sum(storages.values())


def _layer():
    import transformers

    config = transformers.AutoConfig.for_model(**CONFIG)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return model.model.layers[0]


@pytest.mark.parametrize("method", ["full", "lora"])
def test_rmsnorm_scales_in_fp32(method):
    """GemmaRMSNorm: fp32 input copy and rsqrt always; a trainable (1 + w) keeps the fp32 x̂, not a bf16 one.

    The product also saves (1 + w) in fp32: hidden x 4 bytes per norm, whatever the tokens, which
    the planner leaves out (688 KiB over Gemma-7B's 56 norms)."""
    norm = _layer().input_layernorm
    norm.weight.requires_grad_(method == "full")
    x = torch.randn(BATCH, SEQ, CONFIG["hidden_size"], dtype=torch.bfloat16, requires_grad=True)
    run = RunConfig(method=method, batch=BATCH, seq_len=SEQ, precision="bf16", device_kind="cpu")
    spec = spec_from_config(CONFIG, "probe-gemma")
    assert spec.norm_scale_fp32
    one_plus_w = 4 * CONFIG["hidden_size"]
    assert _saved_bytes(norm, x) == _norm_saved_bytes(spec, run, dtype_plan(run)) + one_plus_w


def test_geglu_mlp_saves_gate_its_activation_and_up():
    """down(gelu(gate(x)) * up(x)) with frozen weights: gelu keeps gate's output, the product keeps
    gelu's output and up's, each bf16 x intermediate (the planner's 3 x lo x t x I)."""
    mlp = _layer().mlp
    for p in mlp.parameters():
        p.requires_grad_(False)
    x = torch.randn(BATCH, SEQ, CONFIG["hidden_size"], dtype=torch.bfloat16, requires_grad=True)
    assert _saved_bytes(mlp, x) == 3 * 2 * BATCH * SEQ * CONFIG["intermediate_size"]


def test_tied_embeddings_counted_once():
    spec = spec_from_config(CONFIG, "probe-gemma")
    import transformers

    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**CONFIG))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert spec.base_params == sum(p.numel() for p in model.parameters())


def test_repeating_one_kv_head_is_a_view():
    """transformers' repeat_kv expands then reshapes: from one kv head (Gemma-2B, Gemma 3 1B) that
    reshape is a view, so an explicit mask costs SDPA no k/v copies; from two it copies."""
    from transformers.integrations.sdpa_attention import repeat_kv

    one = torch.randn(2, 1, 16, 8)
    assert repeat_kv(one, 4).untyped_storage().data_ptr() == one.untyped_storage().data_ptr()
    two = torch.randn(2, 2, 16, 8)
    assert repeat_kv(two, 2).untyped_storage().data_ptr() != two.untyped_storage().data_ptr()


@pytest.mark.parametrize("kv_heads, copies", [(1, False), (2, True)])
def test_masked_attention_charges_kv_copies_only_when_repeat_copies(kv_heads, copies):
    from dataclasses import replace

    from vramplan.planner.activations import layer_activations

    config = {**PROBE_MODELS["probe-gemma3"], "num_key_value_heads": kv_heads}
    spec = spec_from_config(config, "probe-gemma3")
    windowed = RunConfig(method="lora", batch=BATCH, seq_len=256, precision="bf16", device_kind="cpu", grad_ckpt=False)
    short = replace(windowed, seq_len=128 - 1)  # below the 128-token window: no explicit mask
    dt = dtype_plan(windowed)
    per_token = layer_activations(spec, short, dt, ()).attention / short.tokens
    masked = layer_activations(spec, windowed, dt, ()).attention
    mask = 2 * BATCH * 256 * 256
    kv_copies = 2 * 2 * windowed.tokens * (spec.num_heads - kv_heads) * spec.head_dim
    assert masked == per_token * windowed.tokens + mask + (kv_copies if copies else 0)
