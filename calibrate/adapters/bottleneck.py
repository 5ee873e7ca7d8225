"""Bottleneck adapters (Houlsby / Pfeiffer) as vramplan's own torch module; PEFT has none.

Each adapter is a child `bottleneck` of the Linear whose output it adapts (o_proj, down_proj),
applied by a forward hook: `h + up(act(down(h)))`, before the residual add. `up` starts at zero,
so the model starts exactly as the base (Houlsby's near-identity initialisation). Saved like a
PEFT adapter: `adapter_config.json` + `adapter_model.safetensors` holding only the adapters.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from . import MARK

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
CHILD = "bottleneck"
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class Bottleneck(nn.Module):
    """d -> m -> d with a nonlinearity; returns the input plus the adapter's output."""

    def __init__(self, width: int, size: int, act: str, dtype: torch.dtype, device=None):
        super().__init__()
        self.down = nn.Linear(width, size, dtype=dtype, device=device)
        self.act = ACTIVATIONS[act]()
        self.up = nn.Linear(size, width, dtype=dtype, device=device)
        if self.up.weight.device.type != "meta":
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.up(self.act(self.down(hidden.to(self.down.weight.dtype))))
        return hidden + out.to(hidden.dtype)


def _apply(module: nn.Module, args, output):
    return getattr(module, CHILD)(output)


def _settings(model: nn.Module, run) -> dict:
    """Placements, width, size and activation, as the planner resolves them for this model."""
    from vramplan.planner.architectures import spec_from_config

    spec = spec_from_config(model.config.to_dict(), getattr(model.config, "_name_or_path", "") or "model", source="model")
    adapter = run.method_record.adapter
    placements = adapter.placements(spec, run)
    return {"method": run.method, "placements": list(placements), "width": spec.hidden_size, **adapter.resolved_options(spec, run)}


def _targets(model: nn.Module, placements) -> list[tuple[str, nn.Module]]:
    return [
        (name, module) for name, module in model.named_modules()
        if name.split(".")[-1] in placements and ".layers." in f".{name}" and hasattr(module, "out_features")
    ]


def _insert(model: nn.Module, settings: dict, dtype: torch.dtype) -> nn.Module:
    found = _targets(model, settings["placements"])
    if not found:
        raise ValueError(f"no {', '.join(settings['placements'])} Linears inside decoder layers of this model")
    for _, module in found:
        device = module.weight.device
        adapter = Bottleneck(settings["width"], settings["adapter_size"], settings["adapter_act"], dtype, device)
        module.add_module(CHILD, adapter)
        module.register_forward_hook(_apply)
    setattr(model, MARK, __name__)
    model.vramplan_bottleneck = settings
    return model


def attach(model: nn.Module, run, meta: bool = False) -> nn.Module:
    """Insert one adapter after each placement Linear of every decoder layer; only they train."""
    from ..model_build import ADAPTER_DTYPES

    for p in model.parameters():
        p.requires_grad_(False)
    return _insert(model, _settings(model, run), ADAPTER_DTYPES[run.adapter_dtype])


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if f".{CHILD}." in name}


def save(model: nn.Module, directory: Path, base_path: str | None = None, state_dict=None) -> None:
    """adapter_model.safetensors (the adapters only) and adapter_config.json (how to rebuild them)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if state_dict is not None:  # a gathered full state (FSDP): keep the adapters
        tensors = {name: t for name, t in state_dict.items() if f".{CHILD}." in name}
    else:
        tensors = adapter_state(model)
    save_file({name: t.detach().contiguous().cpu() for name, t in tensors.items()}, str(directory / ADAPTER_WEIGHTS))
    settings = dict(model.vramplan_bottleneck)
    dtype = str(next(iter(tensors.values())).dtype).removeprefix("torch.") if tensors else "float32"
    config = {"adapter_type": "vramplan-bottleneck", **settings, "dtype": dtype, "base_model_name_or_path": base_path}
    (directory / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def load(model: nn.Module, directory: Path) -> None:
    """Weights saved by `save` into a model whose adapters were attached with the same settings."""
    from safetensors.torch import load_file

    from vramplan.planner.errors import ConfigError

    saved = load_file(str(Path(directory) / ADAPTER_WEIGHTS))
    own = adapter_state(model)
    if set(saved) != set(own):
        extra = sorted(set(saved) ^ set(own))[:3]
        raise ConfigError(f"{directory} does not match this adapter ({extra}...); resume with the same settings")
    with torch.no_grad():
        for name, tensor in saved.items():
            own[name].copy_(tensor.to(own[name].dtype))


def from_pretrained(base: nn.Module, directory: Path) -> nn.Module:
    """The base model with the adapters saved in `directory` inserted and loaded, for inference."""
    from vramplan.planner.errors import ConfigError

    path = Path(directory) / ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not a readable adapter config ({exc})") from None
    if config.get("adapter_type") != "vramplan-bottleneck":
        raise ConfigError(f"{path} is not a vramplan bottleneck adapter")
    settings = {key: config[key] for key in ("method", "placements", "width", "adapter_size", "adapter_act")}
    model = _insert(base, settings, getattr(torch, config.get("dtype", "float32")))
    load(model, directory)
    return model


def merge(base: nn.Module, directory: Path) -> nn.Module:
    from vramplan.planner.errors import ConfigError

    raise ConfigError("bottleneck adapters have a nonlinearity and cannot be merged into the base weights; "
                      "load them with vramplan.calibrate.adapters.bottleneck.from_pretrained(base, dir)")
