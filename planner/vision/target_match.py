"""Which components a `--targets` choice reaches: what PEFT would wrap if the names were handed to it
as they are, and what the planner adapts.

PEFT matches `target_modules` names by suffix anywhere in the model, and `all-linear` takes every
Linear but the output head, so on a VLM `q_proj` also hits CLIP's attention and `all-linear` the
whole vision tower and the projector. The planner (like the leading fine-tuning tools) adapts the
LLM's decoder only; `--vision lora` adapts the tower's block Linears.
"""

from __future__ import annotations

from ..targets import LM_HEAD, resolve_targets
from .record import VlmSpec

PARTS = ("vision", "projector", "llm")


def peft_matches(spec: VlmSpec, targets: tuple[str, ...]) -> dict[str, int]:
    """Linear modules per component that PEFT would wrap given `targets` (after `q` -> `q_proj`).

    Raises:
        ConfigError: a target the LLM does not have (the names are the LLM's, as `--targets` says).
    """
    llm_names = resolve_targets(spec.decoder, targets)
    if "all-linear" in (t.strip() for t in targets):  # PEFT: every Linear, the output head excepted
        block_names = {linear.name for linear in spec.vision.linears}
        projector = len(spec.projector.linears)
    else:  # names: a module matches when its own name is one of them
        block_names = set(llm_names)
        projector = sum(1 for linear in spec.projector.linears if linear.name.rsplit(".", 1)[-1] in block_names)
    vision = spec.vision.num_layers * sum(1 for linear in spec.vision.linears if linear.name in block_names)
    layer_names = [name for name in llm_names if name != LM_HEAD]
    llm = spec.decoder.num_layers * len(layer_names) + (LM_HEAD in llm_names)
    return {"vision": vision, "projector": projector, "llm": llm}


def adapted_modules(spec: VlmSpec, llm_adapted: tuple[str, ...], vision_lora: bool) -> dict[str, int]:
    """Linear modules per component the planner puts an adapter on."""
    layer_names = [name for name in llm_adapted if name != LM_HEAD]
    return {
        "vision": spec.vision.num_layers * len(spec.vision.linears) if vision_lora else 0,
        "projector": 0,  # it trains in full (both LLaVA stages) or stays frozen
        "llm": spec.decoder.num_layers * len(layer_names) + (LM_HEAD in llm_adapted),
    }
