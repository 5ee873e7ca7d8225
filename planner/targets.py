"""Resolve `--targets` (names, short names, presets) against a model's Linear modules."""

from __future__ import annotations

from difflib import get_close_matches

from .errors import ConfigError
from .families import Family
from .specs import TARGET_PRESETS, ModelSpec

LM_HEAD = "lm_head"
# a sparse MLP's adaptable tensors (transformers 5): the router's weight and the fused experts, which
# peft 0.21 wraps through `target_parameters` (its `all-linear` includes all three)
MOE_TARGETS = ("gate", "router", "gate_up_proj", "down_proj")  # router: gpt-oss's `mlp.router`


def moe_shapes(model: ModelSpec) -> dict[str, tuple[int, int, int]]:
    """peft's LoRA on the sparse MLP, as (in, out, count) whose A (r x in) + B (out x r) it equals.

    The router is an (E x H) weight: A r x H, B E x r. A fused expert tensor gets one A/B pair
    of rank r·E over all experts (peft ParamWrapper), gate_up_proj rank 2r·E (gate and up each r):
    gate_up 2rE·(H + 2I), down rE·(I + H) per layer (checked on the meta device, peft 0.21.2).
    """
    if not model.num_experts:
        return {}
    h, e, i, n = model.hidden_size, model.num_experts, model.expert_intermediate_size, model.sparse_layers
    layout = model.family.moe
    g = 2 if layout.gate_up_rank_doubled else 1  # gpt-oss: gate_up_proj gets rank r·E (peft 0.21.2, meta device)
    return {layout.router: (h, e, n), "gate_up_proj": (g * e * h, g * e * 2 * i, n), "down_proj": (e * i, e * h, n)}


def short_name(target: str, names: tuple[str, ...], family: Family | None) -> str | None:
    """The module a short `--targets` form stands for: the family's own short name
    (`q` -> `q_proj`, `qkv` -> `qkv_proj`), else the `_proj` convention; None if neither exists."""
    own = family.short_names.get(target) if family is not None else None
    for candidate in (own, f"{target}_proj"):
        if candidate in names:
            return candidate
    return None


def resolve_targets(model: ModelSpec, targets: tuple[str, ...]) -> tuple[str, ...]:
    """Module names the adapter wraps, in the model's own order (`lm_head` last).

    `all-linear` follows PEFT: every Linear in the decoder layers, not `lm_head`.

    Raises:
        ConfigError: a name the architecture does not have; the message lists the ones it has.
    """
    names = model.module_names() + tuple(moe_shapes(model))
    chosen: set[str] = set()
    unknown: list[str] = []
    for raw in targets:
        target = raw.strip()
        if target == "all-linear":
            moe = model.family.moe if model.family is not None else None
            # peft's all-linear skips a router and experts it does not convert (gpt-oss: no nn.Linear there)
            chosen.update(model.module_names() if moe is not None and not moe.all_linear else names)
        elif target in ("attention", "mlp"):
            chosen.update(linear.name for linear in model.linears if linear.group == target and linear.adaptable)
            if target == "mlp":
                chosen.update(moe_shapes(model))
        elif target == LM_HEAD:
            chosen.add(LM_HEAD)
        elif target in names:
            chosen.add(target)
        elif (module := short_name(target, names, model.family)) is not None:  # short form: q -> q_proj
            chosen.add(module)
        else:
            unknown.append(target)
    if unknown:
        hint = ""
        close = get_close_matches(unknown[0], names + TARGET_PRESETS, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
        raise ConfigError(
            f"--targets {','.join(unknown)!r} not in {model.name}{hint}; it has: "
            f"{', '.join(names + (LM_HEAD,))}, or presets {', '.join(TARGET_PRESETS)}"
        )
    ordered = tuple(name for name in names if name in chosen)
    return ordered + ((LM_HEAD,) if LM_HEAD in chosen else ())


def adapted_shapes(model: ModelSpec, names: tuple[str, ...]) -> list[tuple[int, int, int]]:
    """(in_features, out_features, count in the model) for each adapted module."""
    shapes = []
    moe = moe_shapes(model)
    for name in names:
        if name in moe:
            shapes.append(moe[name])
        elif name == LM_HEAD:
            shapes.append((model.hidden_size, model.vocab_size, 1))
        else:
            linear = model.linear(name)
            shapes.append((linear.in_features, linear.out_features, model.linear_layers(linear)))
    return shapes


def lora_tensors(model: ModelSpec, names: tuple[str, ...], rank: int, dora: bool) -> list[tuple[int, int]]:
    """(numel, count) of every LoRA tensor: A (r x in) and B (out x r) per adapted module; DoRA adds
    a magnitude per output feature. The optimizer's states follow these tensors."""
    out = []
    for fan_in, fan_out, count in adapted_shapes(model, names):
        out += [(rank * fan_in, count), (fan_out * rank, count)]
        if dora:
            out.append((fan_out, count))
    return out


def adapter_params(model: ModelSpec, names: tuple[str, ...], rank: int, dora: bool) -> int:
    """Trainable parameters of LoRA (DoRA) on `names` at `rank`."""
    return sum(numel * count for numel, count in lora_tensors(model, names, rank, dora))
