"""What a VLM stage trains, saved and loaded back: the trained components and the LLM's adapter.

Follows the adapter-module protocol of `calibrate.adapters` (save / load), so the trainer's
checkpoints (checkpoint.save_weights) and final weights go through it unchanged. A directory holds

    components.safetensors     every trained weight that is not an adapter's (the projector; the
                               vision tower with --vision full), by its name in the bare model
    adapter_config.json +      the peft adapter (stage 2: LoRA on the LLM; --vision lora), as peft
    adapter_model.safetensors  saves it, loadable by `PeftModel.from_pretrained`

`load_for_inference` rebuilds the model from its directory and puts both back on it.
"""

from __future__ import annotations

from pathlib import Path

from vramplan.planner.errors import ConfigError

COMPONENTS_FILE = "components.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config")


def bare(model):
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if _is_peft(model) else model


def component_state(model) -> dict:
    """Trained weights that are not adapter weights, by their name in the bare model."""
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad and "lora_" not in name:
            out[name.removeprefix(PEFT_PREFIX)] = p.detach().contiguous().cpu()
    return out


def save(model, directory: Path, base_path: str | None = None, state_dict=None) -> None:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(component_state(model), str(directory / COMPONENTS_FILE))
    if _is_peft(model):
        if base_path is not None:
            model.peft_config["default"].base_model_name_or_path = base_path
        model.save_pretrained(directory)


def load_components(model, directory: Path) -> list[str]:
    """Copy ``components.safetensors`` into the model (dtype as the model has it); the names loaded.

    Raises:
        ConfigError: no such file, or a weight this model does not have.
    """
    from safetensors.torch import load_file

    path = Path(directory) / COMPONENTS_FILE
    if not path.is_file():
        raise ConfigError(f"{directory} has no {COMPONENTS_FILE}: give the projector/ or adapter/ folder of a VLM run (or the run's --out)")
    target = bare(model)
    state = load_file(str(path))
    missing = [name for name in state if not _has_parameter(target, name)]
    if missing:
        raise ConfigError(f"{path} does not belong to this model (no {', '.join(missing[:3])}); give a run of the same model")
    for name, tensor in state.items():
        target.get_parameter(name).data.copy_(tensor)
    return sorted(state)


def _has_parameter(model, name: str) -> bool:
    try:
        model.get_parameter(name)
    except AttributeError:
        return False
    return True


def load(model, directory: Path) -> None:
    load_components(model, directory)
    if _is_peft(model) and (Path(directory) / "adapter_model.safetensors").is_file():
        from ..adapters import peft_lora

        peft_lora.load(model, Path(directory))


def load_for_inference(model_dir, trained_dir, device: str = "cpu"):
    """The model of ``model_dir`` (fp32) with a VLM stage's trained weights, ready for ``generate``."""
    import transformers

    from vramplan.planner.inventory import read_config
    from vramplan.planner.vision import VLM_FAMILIES

    model_dir, trained_dir = Path(model_dir), Path(trained_dir)
    config = read_config(model_dir)
    cls = getattr(transformers, VLM_FAMILIES[config["model_type"]].torch_class)
    model = cls.from_pretrained(str(model_dir), local_files_only=True).to(device)
    if (trained_dir / ADAPTER_CONFIG).is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(trained_dir))
    load_components(model, trained_dir)
    return model.eval()
