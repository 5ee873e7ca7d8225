"""Vision-language models as components: one `VlmFamily` record per model_type, keyed like `planner.families`.

A new VLM family is one module here plus one line in `VLM_FAMILIES`.
"""

from __future__ import annotations

from ..errors import UnknownModelError
from .idefics3 import IDEFICS3, SMOLVLM
from .llava import LLAVA, LLAVA_NEXT
from .mllama import MLLAMA
from .paligemma import PALIGEMMA
from .qwen2_vl import QWEN2_5_VL, QWEN2_VL
from .qwen3_vl import QWEN3_VL
from .record import ImageTokens, Projector, VisionTower, VlmFamily, VlmSpec

VLM_FAMILIES: dict[str, VlmFamily] = {
    "qwen2_vl": QWEN2_VL,
    "qwen2_5_vl": QWEN2_5_VL,
    "qwen3_vl": QWEN3_VL,
    "llava": LLAVA,
    "llava_next": LLAVA_NEXT,
    "paligemma": PALIGEMMA,
    "idefics3": IDEFICS3,
    "smolvlm": SMOLVLM,
    "mllama": MLLAMA,
}


def is_vlm_config(config: dict) -> bool:
    """Whether config.json describes a vision-language model (a vision_config beside a decoder)."""
    return config.get("model_type") in VLM_FAMILIES or "vision_config" in config


def vlm_spec_from_config(config: dict, name: str, processor: dict | None = None, source: str = "catalog") -> VlmSpec:
    """The vision tower, projector and decoder of a VLM config.json.

    Raises:
        UnknownModelError: an unsupported VLM family, or a key the family needs is missing.
    """
    from ..architectures import spec_from_config

    model_type = config.get("model_type", "")
    family = VLM_FAMILIES.get(model_type)
    if family is None:
        raise UnknownModelError(
            f"vision-language model_type {model_type!r} of {name} is not supported; supported: {', '.join(VLM_FAMILIES)}"
        )
    try:
        text = family.text_config(config)
        decoder = spec_from_config(text, name, source=source)
        tower = family.vision(config)
    except UnknownModelError as exc:
        raise UnknownModelError(f"{name} ({model_type}): {exc}") from None
    if family.decoder_extra is not None:  # Mllama: cross layers' q/k norms and gates, extra embedding rows
        from dataclasses import replace

        decoder = replace(decoder, extra_params=decoder.extra_params + family.decoder_extra(config, decoder))
    projector = family.projector(config, tower, decoder.hidden_size)
    return VlmSpec(name, model_type, decoder, tower, projector, family, config, dict(processor or {}))


def vlm_spec_for(resolved) -> VlmSpec:
    """The VlmSpec of a resolved `--model` (catalog entries bring their processor values).

    Raises:
        UnknownModelError: the model is not a vision-language model.
    """
    from ..catalog.vlm_models import VLM_CONFIGS

    config = resolved.config
    if not is_vlm_config(config):
        raise UnknownModelError(
            f"{resolved.spec.name} is a text-only model: --stage, --schedule, --images, --image-size, --max-pixels, "
            f"--vision, --projector and --quantize-vision need a vision-language model ({', '.join(VLM_CATALOG_ALIASES())})"
        )
    processor = VLM_CONFIGS.get(resolved.spec.name, {}).get("processor")
    return vlm_spec_from_config(config, resolved.spec.name, processor)


def VLM_CATALOG_ALIASES() -> list[str]:
    from ..catalog.vlm_models import VLM_CONFIGS

    return [entry["aliases"][0] for entry in VLM_CONFIGS.values()]


__all__ = ["ImageTokens", "Projector", "VLM_FAMILIES", "VisionTower", "VlmFamily", "VlmSpec", "is_vlm_config", "vlm_spec_for", "vlm_spec_from_config"]
