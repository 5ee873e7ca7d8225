"""The local model directory a run trains: config.json, tokenizer, weights (or none: random init)."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

import torch

from vramplan.planner.errors import ConfigError
from vramplan.planner.inventory import read_config
from vramplan.planner.specs import GpuSpec, RunConfig

from ..adapters import adapter_module
from ..model_build import build_model
from .model_path import check_model_path  # noqa: F401  (torch-free, for the CLI's preflight)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "vocab.txt", "spiece.model")


@dataclass
class ModelDir:
    path: Path
    config: dict
    tokenizer: object
    weights: list[Path]  # *.safetensors; empty: random init from config.json

    @property
    def pad_id(self) -> int:
        for value in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if value is not None:
                return int(value)
        return 0  # padding is masked from attention and loss: any id will do


def _vocab_size(config: dict) -> int | None:
    return config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")


def load_tokenizer(path: Path, config: dict):
    """The directory's tokenizer, checked against the model's vocabulary.

    Raises:
        ConfigError: no tokenizer files, one that does not load, or more tokens than embeddings.
    """
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(
            f"{path} has no tokenizer (none of {', '.join(TOKENIZER_FILES[:4])}): "
            f"save the model's tokenizer there with tokenizer.save_pretrained('{path}')"
        )
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # transformers raises many kinds here; the first line says what
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"{path}: the tokenizer does not load ({type(exc).__name__}: {first})") from None
    vocab = _vocab_size(config)
    if vocab and len(tokenizer) > vocab:
        raise ConfigError(f"{path}: the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {vocab}; they do not belong together")
    return tokenizer


def load_model_dir(path) -> ModelDir:
    """Read and check a model directory (nothing heavy: no weights are loaded here).

    Raises:
        ConfigError / UnknownModelError: not a directory, no or bad config.json, no tokenizer,
            or weights only in pickle (*.bin) form.
    """
    path = check_model_path(path)
    config = read_config(path)
    tokenizer = load_tokenizer(path, config)
    weights = sorted(path.glob("*.safetensors"))
    if not weights and any(path.glob("pytorch_model*.bin")):
        raise ConfigError(
            f"{path} holds its weights as pytorch_model*.bin only: convert them to safetensors "
            "(model.save_pretrained(dir, safe_serialization=True)); vramplan does not unpickle weight files"
        )
    return ModelDir(path, config, tokenizer, weights)


def pick_device(device: str | None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cuda", "cpu"):
        raise ConfigError(f"--device {device!r} is not one of: cuda, cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible to torch; use --device cpu")
    return device


def capacity_gpu(gpu: GpuSpec | None, device: str) -> GpuSpec | None:
    """The GPU whose memory bounds the run: the visible device's real total (None on CPU)."""
    if device != "cuda":
        return None
    from vramplan.planner.catalog import custom_gpu, gpu_for_device_name

    props = torch.cuda.get_device_properties(0)
    base = gpu or gpu_for_device_name(props.name) or custom_gpu(int(props.total_memory))
    return replace(base, total_bytes=int(props.total_memory))


def apply_rslora(model) -> None:
    """rsLoRA: scale the adapter by alpha / sqrt(r) instead of alpha / r (same parameters and memory)."""
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name in module.r:
                module.use_rslora[name] = True
                module.set_scale(name, 1.0)
    for config in model.peft_config.values():
        config.use_rslora = True  # saved with the adapter, so a reload scales the same way


def build_training_model(model_dir: ModelDir, run: RunConfig, device: str, use_rslora: bool = False):
    """`build_model` for ``run``, with the directory's weights when it has them.

    build_model makes the base model with ``AutoModelForCausalLM.from_config`` and then quantizes
    and wraps it; swapping that one call for ``from_pretrained`` keeps every later step identical
    to what the planner measured, with real weights underneath.
    """
    model = _build(model_dir, run, device)
    if use_rslora and run.uses_rank:
        apply_rslora(model)
    return model


def _build(model_dir: ModelDir, run: RunConfig, device: str):
    from transformers import AutoModelForCausalLM

    source = str(model_dir.path)

    def from_config(config, **kwargs):
        return AutoModelForCausalLM.from_pretrained(source, config=config, local_files_only=True, **kwargs)

    patch = mock.patch.object(AutoModelForCausalLM, "from_config", from_config) if model_dir.weights else contextlib.nullcontext()
    with patch, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5 renames checkpointing helpers peft still calls
        return build_model(model_dir.config, run, device)


def merge_adapter(model_dir: ModelDir, run: RunConfig, adapter_dir: Path, merged_dir: Path) -> Path:
    """Base weights (as stored) + the adapter, merged into plain weights, saved with the tokenizer.

    Done from a fresh full-precision load rather than the training model, whose 4-bit base
    (QLoRA) would make the merge lossy.
    """
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model_dir.path), dtype="auto", local_files_only=True)
    merged = adapter_module(run).merge(base, adapter_dir)
    merged.save_pretrained(merged_dir)
    model_dir.tokenizer.save_pretrained(merged_dir)
    return merged_dir
