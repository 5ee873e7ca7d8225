"""Checkpoints and the run marker of a `vramplan run` output directory.

Layout of ``OUT``::

    vramplan-run.json          the marker: this directory holds a run (config, status, record ids)
    checkpoints/step-000040/   weights/ (adapter or model, safetensors) + trainer_state.pt
    adapter/ or model/         the final weights (+ tokenizer)
    merged/                    the merged model, on request

Trainer state is written with ``torch.save`` and read back with ``torch.load(weights_only=True)``:
tensors, numbers, strings and containers only, so a checkpoint can never run code when loaded.
A checkpoint is written to a temporary folder and renamed into place, so a crash mid-save leaves
the previous checkpoint intact.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import torch

from vramplan.planner.errors import ConfigError

from ..adapters import module_of
from .marker import FORMAT, MARKER, claim_out_dir, read_marker, write_marker  # noqa: F401  (the marker lives there, torch-free)

STATE_FILE = "trainer_state.pt"
FULL_WEIGHTS = "model.safetensors"


# ---------------------------------------------------------------- weights
def has_adapter(model) -> bool:
    """True when an adapter kind's torch module attached to `model` (it then saves alone)."""
    return module_of(model) is not None


def save_weights(model, directory: Path) -> None:
    """The adapter (its kind's own format) or, for full fine-tuning, every parameter."""
    directory.mkdir(parents=True, exist_ok=True)
    adapter = module_of(model)
    if adapter is not None:
        adapter.save(model, directory)
    else:
        from safetensors.torch import save_model

        save_model(model, str(directory / FULL_WEIGHTS))  # handles tied embeddings


def load_weights(model, directory: Path) -> None:
    adapter = module_of(model)
    if adapter is not None:
        adapter.load(model, directory)
    else:
        from safetensors.torch import load_model

        load_model(model, str(directory / FULL_WEIGHTS))


# ---------------------------------------------------------------- RNG
def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


# ---------------------------------------------------------------- checkpoints
def checkpoint_dirs(out_dir: Path) -> list[Path]:
    """Complete checkpoints (those with a state file), oldest first."""
    root = out_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if (p / STATE_FILE).is_file() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def save_checkpoint(out_dir: Path, model, optimizer, scheduler, state: dict, keep: int = 2) -> Path:
    """Weights + optimizer + scheduler + ``state`` (step, data position, losses, RNG, ...)."""
    final = out_dir / "checkpoints" / f"step-{state['step']:06d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_weights(model, tmp / "weights")
        payload = {**state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()}
        torch.save(payload, tmp / STATE_FILE)
    except BaseException:  # a full disk (or Ctrl-C) mid-save: no half checkpoint is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in checkpoint_dirs(out_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and RNG from ``path``; returns the trainer state.

    Raises:
        ConfigError: the checkpoint is damaged (a cut or overwritten file); the message says how to go on.
    """
    try:
        load_weights(model, path / "weights")
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state.pop("optimizer"))
        scheduler.load_state_dict(state.pop("scheduler"))
        set_rng_state(state.pop("rng"))
    except Exception as exc:  # torch, safetensors and pickle each raise their own kinds for a damaged file
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ConfigError(
            f"checkpoint {path} is damaged ({type(exc).__name__}: {first}); delete that folder to resume from the "
            "checkpoint before it, or start again with another --out"
        ) from None
    return state
