"""Adapter tuning: bottleneck modules d -> m -> d with a nonlinearity and their own skip connection.

Houlsby et al. 2019 insert two per layer (after the attention output projection and after the
feed-forward block, before each residual add); Pfeiffer et al. 2020 keep only the one after the
feed-forward block. Each adapter is down (m x d + m), act, up (d x m + d): 2md + d + m parameters.
The torch side is vramplan's own module (`calibrate/adapters/bottleneck.py`): forward hooks on the
o_proj / down_proj Linears, base frozen, layer norms frozen.

Saved for backward per adapter (torch 2.13 autograd): `down` keeps its input (the Linear output
cast to the adapter dtype, or autocast's 16-bit cast); relu keeps its output, which `up` saves
too; gelu and silu keep their input, so the hidden activation is saved twice.
"""

from __future__ import annotations

from ..dtypes import DtypePlan
from ..errors import ConfigError
from ..specs import ModelSpec, RunConfig
from .base import FROZEN, NF4
from .record import AdapterKind, Method, MethodOption

REDUCTION = 16  # default bottleneck: hidden_size / 16, the common reduction factor
ACTIVATIONS = ("relu", "gelu", "silu")
SIZE = MethodOption("adapter_size", "--adapter-size", int, None, "Bottleneck width m of the Adapter methods [default: hidden size / 16].")
ACT = MethodOption("adapter_act", "--adapter-act", str, "relu", "Nonlinearity inside the Adapter methods' bottleneck [default: relu].", ACTIVATIONS)
AFTER = {"attention": "attn_out", "mlp": "mlp_prod"}  # the Linear reading this input writes the block's output


def bottleneck_size(model: ModelSpec, run: RunConfig) -> int:
    return run.option(SIZE.name) or max(1, model.hidden_size // REDUCTION)


def _placements(blocks: tuple[str, ...]):
    def placements(model: ModelSpec, run: RunConfig) -> tuple[str, ...]:
        """The output Linears of the chosen blocks (o_proj, down_proj in the llama layout)."""
        # a mixture of experts has no dense MLP Linear to sit after (DeepSeek's dense and shared-expert
        # MLPs are not adaptable targets: not modelled for the bottleneck adapters either)
        outputs = {key: [n for n in names if model.linear(n).adaptable] for key, names in model.input_groups.items()}
        missing = [block for block in blocks if not outputs.get(AFTER[block])]
        if missing:
            raise ConfigError(f"--method {run.method}: {model.name} has no dense {missing[0]} output Linear (mixture of experts); use --method lora or qlora")
        return tuple(outputs[AFTER[block]][-1] for block in blocks)

    return placements


def _tensors(model: ModelSpec, run: RunConfig, adapted: tuple[str, ...]) -> list[tuple[int, int]]:
    d, m, layers = model.hidden_size, bottleneck_size(model, run), model.num_layers
    per_adapter = [(m * d, layers), (m, layers), (d * m, layers), (d, layers)]  # down W, b; up W, b
    return per_adapter * len(adapted)


def _layer_saved(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...], in_dtype: dict, trains_base: bool) -> tuple[int, int]:
    """(down's input copy + the hidden activation per adapter; autocast's weight casts)."""
    t, d, m = run.tokens, model.hidden_size, bottleneck_size(model, run)
    saved_dtype = dt.compute_bytes if dt.autocast else dt.adapter_bytes
    hidden_copies = 1 if run.option(ACT.name) == "relu" else 2
    inputs = len(adapted) * saved_dtype * t * (d + hidden_copies * m)
    # autocast saves the 16-bit casts of down's and up's fp32 weights
    weight_casts = len(adapted) * 2 * dt.compute_bytes * m * d if dt.autocast else 0
    return inputs, weight_casts


def _first_layer_savings_after_attention(model, run, dt, adapted, frozen_layer, input_norm: int) -> int:
    """Houlsby: layer 0's first trainable tensor is the adapter after o_proj, so its input norm,
    q/k norms, attention and (under autocast) the attention weights' casts keep nothing."""
    qk_norms = frozen_layer.norms - model.norms_per_layer * input_norm
    casts = 0
    if frozen_layer.frozen_weight_casts:
        casts = dt.compute_bytes * sum(linear.params for linear in model.linears if linear.group == "attention")
    return input_norm + qk_norms + frozen_layer.attention + frozen_layer.attention_scores + casts


def _first_layer_savings_after_mlp(model, run, dt, adapted, frozen_layer, input_norm: int) -> int:
    """Pfeiffer: the only trainable tensors of layer 0 come after its MLP: the rest keeps nothing."""
    return frozen_layer.total


def _describe(model: ModelSpec, run: RunConfig, adapted: tuple[str, ...]) -> str:
    return f"bottleneck m={bottleneck_size(model, run)} {run.option(ACT.name)} {run.adapter_dtype} after {','.join(adapted)}"


def _resolved(model: ModelSpec, run: RunConfig) -> dict:
    return {SIZE.name: bottleneck_size(model, run), ACT.name: run.option(ACT.name)}


def _reasons(run: RunConfig) -> tuple[str, ...]:
    return ("bottleneck adapters: no rank or targets to choose; one adapter set per task (multi-task friendly)",)


def _kind(name: str, label: str, blocks: tuple[str, ...], first_layer) -> AdapterKind:
    return AdapterKind(
        name=name,
        label=label,
        uses_rank=False,
        placements=_placements(blocks),
        tensors=_tensors,
        layer_saved=_layer_saved,
        first_layer_savings=first_layer,
        torch_module="vramplan.calibrate.adapters.bottleneck",
        options=(SIZE, ACT),
        resolved_options=_resolved,
        describe=_describe,
        mergeable=False,  # the nonlinearity cannot be folded into a weight
        reasons=_reasons,
    )


HOULSBY = _kind("bottleneck", "Adapters (Houlsby): down/up", ("attention", "mlp"), _first_layer_savings_after_attention)
PFEIFFER = _kind("bottleneck", "Adapters (Pfeiffer): down/up", ("mlp",), _first_layer_savings_after_mlp)

_LR_REASON = "Adapter tuning: lr {lr:.0e}{size_note} (Houlsby et al. 2019 swept 3e-5 to 3e-3)"
ADAPTER = Method(
    key="adapter",
    title="Adapter",
    summary="Houlsby bottleneck adapters after attention and MLP, frozen 16-bit base",
    base=FROZEN,
    adapter=HOULSBY,
    quality=1.15,  # assumed: near LoRA in the papers' comparisons, a little below on LLM instruction tuning
    lr=1e-4,
    lr_reason=_LR_REASON,
)
ADAPTER_PFEIFFER = Method(
    key="adapter-pfeiffer",
    title="Adapter-Pfeiffer",
    summary="one bottleneck adapter per layer, after the MLP (Pfeiffer et al. 2020)",
    base=FROZEN,
    adapter=PFEIFFER,
    quality=1.1,
    lr=1e-4,
    lr_reason=_LR_REASON,
)
QADAPTER = Method(
    key="qadapter",
    title="QAdapter",
    summary="Houlsby bottleneck adapters on a 4-bit NF4 base",
    base=NF4,
    adapter=HOULSBY,
    quality=1.05,
    lr=1e-4,
    lr_reason=_LR_REASON,
)
METHODS = (ADAPTER, ADAPTER_PFEIFFER, QADAPTER)
