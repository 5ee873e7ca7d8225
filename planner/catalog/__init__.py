"""Look up models and GPUs by hub id, alias, size shorthand or key, with near-match hints."""

from __future__ import annotations

from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path

from ..architectures import spec_from_config
from ..errors import UnknownGpuError, UnknownModelError
from ..specs import GpuSpec, ModelSpec
from .gpus import GPU_PRESETS
from .models import MODEL_CONFIGS, SIZE_DEFAULTS
from .vlm_models import VLM_CONFIGS


@dataclass(frozen=True)
class ResolvedModel:
    spec: ModelSpec
    note: str  # how the name was resolved, shown to the user ("8b -> meta-llama/Meta-Llama-3-8B")
    config: dict  # the config.json dict the spec came from (used to build the model for measuring)


def _model_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for hub_id, entry in (*MODEL_CONFIGS.items(), *VLM_CONFIGS.items()):
        index[hub_id.lower()] = hub_id
        index[hub_id.split("/")[-1].lower()] = hub_id
        for alias in entry["aliases"]:
            index[alias.lower()] = hub_id
    return index


def catalog_spec(hub_id: str) -> ModelSpec:
    if hub_id in VLM_CONFIGS:  # a VLM: its decoder with the vision tower and projector as components
        from ..vision import vlm_spec_from_config

        entry = VLM_CONFIGS[hub_id]
        return vlm_spec_from_config(entry["config"], hub_id, entry.get("processor")).model
    return spec_from_config(MODEL_CONFIGS[hub_id]["config"], hub_id)


def _entry(hub_id: str) -> dict:
    return VLM_CONFIGS[hub_id] if hub_id in VLM_CONFIGS else MODEL_CONFIGS[hub_id]


def resolve_model(name: str) -> ResolvedModel:
    """A catalog entry, a size shorthand, a local config.json / model directory, or a hub id.

    Raises:
        UnknownModelError: nothing matches; the message suggests near matches.
    """
    text = name.strip()
    key = text.lower()
    if key in SIZE_DEFAULTS:
        hub_id = SIZE_DEFAULTS[key]
        return ResolvedModel(catalog_spec(hub_id), f"{text} -> {hub_id} (size default; pass a hub id to choose another)", MODEL_CONFIGS[hub_id]["config"])
    index = _model_index()
    if key in index:
        hub_id = index[key]
        return ResolvedModel(catalog_spec(hub_id), hub_id, _entry(hub_id)["config"])
    path = Path(text).expanduser()
    if path.exists():
        from ..inventory import spec_from_path

        spec, config = spec_from_path(path)
        return ResolvedModel(spec, f"{path} ({spec.model_type}, {spec.source})", config)
    if "/" in text and not text.startswith((".", "/", "~")) and text.count("/") == 1:
        from .remote import fetch_config

        config = fetch_config(text)
        spec = spec_from_config(config, text, source="hub config.json")
        return ResolvedModel(spec, f"{text} (config.json from the hub)", config)
    choices = sorted(set(index) | set(SIZE_DEFAULTS))
    close = get_close_matches(key, choices, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UnknownModelError(
        f"unknown model {text!r}: {hint}run `vramplan models` for the catalog, or pass a local config.json or model directory"
    )


def all_models() -> list[tuple[str, tuple[str, ...], ModelSpec]]:
    return [(hub_id, entry["aliases"], catalog_spec(hub_id)) for hub_id, entry in MODEL_CONFIGS.items()]


def gpu_from_preset(key: str) -> GpuSpec:
    entry = GPU_PRESETS[key]
    return GpuSpec(
        key=key,
        name=entry["name"],
        total_bytes=entry["total_bytes"],
        bf16=entry["bf16"],
        bandwidth_gbps=entry.get("bandwidth_gbps", 0.0),
        bf16_tflops=entry.get("bf16_tflops", 0.0),
        aliases=tuple(entry.get("aliases", ())),
    )


def all_gpus() -> list[GpuSpec]:
    return [gpu_from_preset(key) for key in GPU_PRESETS]


def resolve_gpu(name: str) -> GpuSpec:
    """A GPU by key or alias (case-insensitive).

    Raises:
        UnknownGpuError: unknown or ambiguous; lists the choices.
    """
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    gpus = all_gpus()
    for gpu in gpus:
        if key == gpu.key or key in gpu.aliases:
            return gpu
    prefixed = [gpu.key for gpu in gpus if gpu.key.startswith(key)]
    if prefixed:
        raise UnknownGpuError(f"--gpu {name!r} is ambiguous: choose one of {', '.join(prefixed)}")
    names = [gpu.key for gpu in gpus]
    close = get_close_matches(key, names + [a for gpu in gpus for a in gpu.aliases], n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UnknownGpuError(f"unknown GPU {name!r}: {hint}known: {', '.join(names)}; or give --gpu-mem 22GiB")


def custom_gpu(total_bytes: int, bf16: bool = True) -> GpuSpec:
    """A GPU known only by its memory (`--gpu-mem`)."""
    gib = total_bytes / (1 << 30)
    return GpuSpec(key="custom", name=f"custom GPU ({gib:.1f} GiB)", total_bytes=total_bytes, bf16=bf16)


def gpu_for_device_name(device_name: str) -> GpuSpec | None:
    """The preset a driver-reported name belongs to ('NVIDIA A100-SXM4-80GB' -> a100-80gb), if any."""
    tokens = set("".join(ch if ch.isalnum() else " " for ch in device_name.lower()).split())
    best, best_score = None, 0
    for gpu in all_gpus():
        for name in (gpu.key, *gpu.aliases):
            parts = name.split("-")
            if all(part in tokens for part in parts) and len(parts) > best_score:
                best, best_score = gpu, len(parts)
    return best
