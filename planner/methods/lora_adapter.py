"""LoRA and DoRA as adapter parts: low-rank A/B on chosen Linears (peft `LoraConfig`).

Activation counts follow peft 0.21's `lora.Linear.forward`: each wrapped module runs its own
dropout, casts x to the adapter dtype, and lora_A saves that copy; lora_B saves lora_A's output.
DoRA (`use_dora=True`) adds a magnitude per output feature and keeps the base and LoRA results.
"""

from __future__ import annotations

from dataclasses import replace

from ..breakdown import BACKWARD, Term
from ..dtypes import DtypePlan
from ..specs import ModelSpec, RunConfig
from ..errors import ConfigError
from ..targets import LM_HEAD, MOE_TARGETS, lora_tensors, resolve_targets
from .record import AdapterKind

BOOL = 1
FP32 = 4
MLP_INPUT_LINEARS = ("gate_proj", "up_proj", "gate_up_proj")


def _placements(model: ModelSpec, run: RunConfig) -> tuple[str, ...]:
    adapted = resolve_targets(model, run.targets)
    moe = [name for name in adapted if name in MOE_TARGETS] if model.num_experts else []
    if moe and run.dropout > 0:
        # peft 0.21's ParamWrapper (target_parameters) raises "does not work with lora_dropout != 0"
        raise ConfigError(
            f"--dropout {run.dropout:g}: peft cannot put dropout on the router or fused experts ({', '.join(moe)}); "
            "pass --dropout 0, or --targets attention"
        )
    return adapted


def _tensors(dora: bool):
    def tensors(model: ModelSpec, run: RunConfig, adapted: tuple[str, ...]) -> list[tuple[int, int]]:
        return lora_tensors(model, adapted, run.rank, dora)

    return tensors


def _layer_saved(dora: bool):
    def layer_saved(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...], in_dtype: dict, trains_base: bool) -> tuple[int, int]:
        """(input copies, dropout masks and A outputs; DoRA's saved results) of one layer."""
        t = run.tokens
        c, ad = dt.compute_bytes, dt.adapter_bytes
        copy_dtype = c if dt.autocast else ad
        inputs, extra = 0, 0
        for key, names in model.input_groups.items():
            chosen = [name for name in names if name in adapted]
            if not chosen:
                continue
            width = model.linear(chosen[0]).in_features
            if run.dropout > 0:
                # each module has its own dropout, saving its output (lora_A's input) and the mask:
                # CUDA's fused kernel keeps a bool mask, the CPU path a scaled noise tensor in x's dtype
                # (autocast then saves lora_A's own 16-bit cast of the dropout output)
                mask = BOOL if run.device_kind == "cuda" else ad
                inputs += len(chosen) * (copy_dtype + mask) * t * width
            elif dt.autocast or copy_dtype != in_dtype[key]:
                # peft casts x to the adapter dtype per module, lora_A saves the copy (under autocast
                # its own 16-bit cast of it: autocast caches casts of weights, not of activations)
                inputs += len(chosen) * copy_dtype * t * width
            elif not trains_base and not (key == "attn_out" and _sdpa_output_is_o_input(model, run)):
                inputs += in_dtype[key] * t * width  # the shared input itself stays alive
            for name in chosen:
                inputs += copy_dtype * t * run.rank  # lora_A output, saved by lora_B
                if dora:
                    # under autocast the LoRA result (and, with dropout, the recomputed base result and
                    # the weight copy) are 16-bit, like the input copies
                    extra += _dora_saved_bytes(model.linear(name), run, dt.linear_out_bytes, copy_dtype)
        return inputs, extra

    return layer_saved


def _sdpa_output_is_o_input(model: ModelSpec, run: RunConfig) -> bool:
    """SDPA (and flash) return their output laid out (batch, seq, heads, head_dim), so o_proj's input
    is a view of the output SDPA already keeps (`activations/attention`); eager attention's
    `.transpose(1, 2).contiguous()` makes a copy. Measured on probe-olmoe/probe-llama QLoRA (dropout 0)."""
    return not (run.attention == "eager" or (run.attention == "sdpa" and not model.sdpa))


def _dora_saved_bytes(linear, run: RunConfig, lo: int, ad: int) -> int:
    """peft's DoRA forward: (m/||W|| - 1) * base_result + m/||W|| * lora_result keeps both results.

    Without dropout the base result is the 16-bit output the layer already computed. With
    dropout, peft recomputes it as F.linear(dropout(x), W.to(x.dtype)), which saves that
    full-size copy of the base weight in the adapter dtype for backward.
    """
    t = run.tokens
    if run.dropout > 0:
        return ad * linear.in_features * linear.out_features + 2 * ad * t * linear.out_features
    return (lo + ad) * t * linear.out_features


def _first_layer_savings(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...], frozen_layer, input_norm: int) -> int:
    """Layer 0 without checkpointing: its input needs no gradient.

    Its input norm keeps nothing, a dropout in front of q/k/v keeps no mask; without any
    attention-input adapter the whole attention block of layer 0 keeps nothing either.
    """
    return input_norm + _after_input_norm(model, run, dt, adapted, frozen_layer)


def _after_input_norm(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...], base_layer) -> int:
    attention_in = [
        linear.name for linear in model.linears
        if linear.group == "attention" and linear.in_features == model.hidden_size and linear.name != "o_proj"
    ]
    chosen = [name for name in attention_in if name in adapted]
    if chosen and run.dropout > 0:
        mask = BOOL if run.device_kind == "cuda" else dt.adapter_bytes
        return len(chosen) * mask * run.tokens * model.hidden_size
    if not chosen:
        return base_layer.attention + base_layer.attention_scores
    return 0


def _dora_terms(model: ModelSpec, run: RunConfig, dt: DtypePlan, adapted: tuple[str, ...]) -> list[Term]:
    """DoRA builds B·A through an identity matrix and the full weight to take its norm.

    peft's DoRA layer makes eye(in) in the adapter dtype, the dense lora weight (in x out)
    and the dequantized/cast base weight plus their sum, all at once for the largest module.
    Counted as coinciding with the layer's other transients: the conservative choice.
    """
    ad = dt.adapter_bytes
    largest = 0
    for name in adapted:
        if name == LM_HEAD:
            fan_in, fan_out = model.hidden_size, model.vocab_size
        elif model.num_experts and name in MOE_TARGETS:
            raise ConfigError(f"--method {run.method}: DoRA on the router or fused experts ({name}) is not modelled; use --targets attention")
        else:
            linear = model.linear(name)
            fan_in, fan_out = linear.in_features, linear.out_features
        largest = max(largest, ad * fan_in * fan_in + 3 * ad * fan_in * fan_out)
    if not largest:
        return []
    return [Term("activations/dora_weight_norm", largest, "DoRA: eye(in), dense B@A and the full weight for ||W + sBA||", frozenset({BACKWARD}))]


def _lora_reasons(run: RunConfig) -> tuple[str, ...]:
    targets = (
        f"targets {','.join(run.targets)}: all-linear beats attention-only at equal memory"
        if run.targets == ("all-linear",)
        else "attention-only targets: all-linear did not fit or was not better for this goal"
    )
    alpha = f"alpha = 2r = {run.lora_alpha:g}" + ("; use rsLoRA (use_rslora=True) at this rank" if run.rank >= 64 else "")
    return (targets, alpha)


def _describe(model: ModelSpec, run: RunConfig, adapted: tuple[str, ...]) -> str:
    return f"LoRA r={run.rank} α={run.lora_alpha:g} dropout={run.dropout:g} {run.adapter_dtype} on {','.join(adapted) or '-'}"


LORA_ADAPTER = AdapterKind(
    name="lora",
    label="LoRA A/B",
    uses_rank=True,
    placements=_placements,
    tensors=_tensors(dora=False),
    layer_saved=_layer_saved(dora=False),
    first_layer_savings=_first_layer_savings,
    widens_mlp_output=lambda adapted: any(name in adapted for name in MLP_INPUT_LINEARS),
    torch_module="vramplan.calibrate.adapters.peft_lora",
    reasons=_lora_reasons,
    describe=_describe,
)

# DoRA is LoRA plus the magnitude: the same placements, more tensors, saves and temporaries
DORA_ADAPTER = replace(
    LORA_ADAPTER,
    name="dora",
    label="DoRA: LoRA A/B + magnitude",
    tensors=_tensors(dora=True),
    layer_saved=_layer_saved(dora=True),
    extra_terms=_dora_terms,
    speed=0.85,  # the weight norm each step
    describe=lambda model, run, adapted: _describe(model, run, adapted).replace("LoRA", "DoRA", 1),
)
