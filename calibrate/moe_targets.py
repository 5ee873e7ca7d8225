"""peft settings for LoRA on a mixture of experts' router and fused experts (transformers 5).

The router (`mlp.gate`, a TopKRouter) and the experts (`mlp.experts.gate_up_proj` / `down_proj`,
3-D parameters) are no `nn.Linear`, so peft reaches them through `target_parameters`. peft 0.21
does this itself for `"all-linear"` and for the transformers-4 names (`w1`/`w2`/`w3`,
`gate_proj`/`up_proj`/`down_proj`), and then gives the fused gate_up_proj rank 2r and alpha 2α
(gate and up had r each; `peft.utils.transformers_weight_conversion._convert_peft_config_moe`).
Named targets (`--targets attention,gate_up_proj` or `mlp`) get the same settings here, so what is
built is what the planner counts (`planner.targets.moe_shapes`).
"""

from __future__ import annotations

import re

from vramplan.planner.targets import MOE_TARGETS

PARAMETERS = {"gate": "gate.weight", "router": "router.weight", "gate_up_proj": "experts.gate_up_proj", "down_proj": "experts.down_proj"}
FUSED = "gate_up_proj"  # gate and up fused: rank and alpha doubled, as peft's conversion does


def moe_lora_kwargs(model, targets: tuple[str, ...], rank: int, alpha: float) -> dict | None:
    """`LoraConfig` keyword arguments for named targets on a MoE model; None when peft's defaults
    apply (a dense model, or `all-linear`, which peft converts itself)."""
    from vramplan.planner.architectures import spec_from_config
    from vramplan.planner.targets import resolve_targets

    config = getattr(model, "config", None)
    if config is None or tuple(targets) == ("all-linear",):
        return None
    spec = spec_from_config(config.to_dict(), "built model")
    if not spec.num_experts:
        return None
    names = resolve_targets(spec, tuple(targets))
    modules = [name for name in names if name not in MOE_TARGETS]
    parameters = [PARAMETERS[name] for name in names if name in MOE_TARGETS]
    kwargs: dict = {"target_modules": modules or None, "target_parameters": parameters or None}
    if FUSED in names and spec.family.moe.gate_up_rank_doubled:  # gpt-oss: rank r, as peft builds it
        key = rf".*\.{re.escape(FUSED)}"
        kwargs.update(rank_pattern={key: 2 * rank}, alpha_pattern={key: 2 * alpha})
    return kwargs
