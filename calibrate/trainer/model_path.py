"""Is `--model` a local model directory? Answered without torch, so `vramplan run` checks it first."""

from __future__ import annotations

from pathlib import Path

from vramplan.planner.errors import ConfigError

NEEDS = "`vramplan run` trains a local model directory (config.json, tokenizer, *.safetensors)"


def check_model_path(path) -> Path:
    """A directory with a config.json, or a one-line error saying what `run` needs."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"--model {path}: not a directory; {NEEDS}")
    if not (path / "config.json").is_file():
        raise ConfigError(f"--model {path} has no config.json; {NEEDS}")
    return path
