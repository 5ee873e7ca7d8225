"""The installed software stack: memory paths that differ across transformers versions.

The estimator's terms follow transformers 5.x. Two paths were different in the 4.x releases
people still have installed; each was read in that version's source (wheel from PyPI) and
measured here with the CPU live-tensor tracker (probe-llama / probe-llama2, LoRA and full, bf16 and fp32;
README, "The installed stack"):

| transformers | causal-LM loss (llama, qwen2, mistral, phi3, gemma2 ...)             | SDPA with GQA             |
|--------------|----------------------------------------------------------------------|---------------------------|
| < 4.46       | the model's forward: `logits = lm_head(h).float()`, then             | `repeat_kv` k and v to    |
|              | `shift_logits = logits[..., :-1, :].contiguous()` (fp32 copy of      | all heads before SDPA     |
|              | b x (s-1) x vocab); output.logits is the fp32 tensor                 | (`LlamaSdpaAttention`,    |
|              | (models/llama/modeling_llama.py, 4.44.2 and 4.45.2)                  | 4.45.2; integrations/     |
| 4.46 - 4.48  | `loss/loss_utils.py::ForCausalLMLoss`: `logits.float()` then the      | sdpa_attention.py, 4.48.3 |
|              | same contiguous shifted copy; output.logits stays 16-bit (4.46.0,     | and 4.53.3)               |
|              | 4.48.3)                                                              |                           |
| 4.49 - 5.x   | ForCausalLMLoss pads the labels instead (`nn.functional.pad(labels,   | >= 4.54: `enable_gqa`     |
|              | (0, 1))`) and flattens the upcast logits: no copy (4.49.0)                | when no mask (4.54.0)     |

`num_items_in_batch` only switches cross-entropy to reduction="sum" (4.46 on): no tensor of
[tokens, vocab] size more or less. PEFT versions are not modelled: every measurement used peft 0.21.2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from .errors import ConfigError

BUILT_FOR = "5.24.0"  # the transformers the estimator's terms were measured with (used when none is installed)
FLAG = "--transformers-version"
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:[.+\-]?(?:dev|rc|a|b|post)?\d*.*)?$")
OLDEST, NEWEST_MAJOR = (4, 0), 5  # the range the table above covers


@dataclass(frozen=True)
class LossPath:
    """How transformers computes a causal LM's loss from the logits, as far as memory goes."""

    key: str
    upcast_in_model: bool  # the model's forward upcasts (the 16-bit head output dies at the cast)
    shift_copy: bool  # logits[..., :-1, :].contiguous(): one more fp32 [b, s-1, vocab] tensor
    source: str


MODEL_UPCAST = LossPath("model-upcast", True, True, "transformers < 4.46: modeling_<family>.py forward")
SHIFT_COPY = LossPath("shift-copy", False, True, "transformers 4.46-4.48: loss/loss_utils.py ForCausalLMLoss")
PADDED_LABELS = LossPath("padded-labels", False, False, "transformers >= 4.49: ForCausalLMLoss pads the labels")


@dataclass(frozen=True)
class Stack:
    """The transformers version a run is modelled for, and where that version came from."""

    transformers: str
    source: str  # "flag" (--transformers-version), "installed", or "default" (none installed: BUILT_FOR)

    def __post_init__(self) -> None:
        if self.source == "flag":
            problem = version_problem(self.transformers)
            if problem:
                raise ConfigError(problem)

    @property
    def version(self) -> tuple[int, int]:
        return _clamped(self.transformers)

    @property
    def loss_path(self) -> LossPath:
        if self.version < (4, 46):
            return MODEL_UPCAST
        return SHIFT_COPY if self.version < (4, 49) else PADDED_LABELS

    @property
    def sdpa_enable_gqa(self) -> bool:
        """SDPA broadcasts grouped k/v itself (no mask); before 4.54 k and v were repeated to all heads."""
        return self.version >= (4, 54)

    @property
    def label(self) -> str:
        return f"transformers {self.transformers} ({self.source})"


def parse_version(text: str) -> tuple[int, int] | None:
    """(major, minor) of a version string like '4.45.2', '4.46.0.dev0' or '5.0.0rc1'; None if unparseable."""
    match = _VERSION.match(text.strip()) if isinstance(text, str) else None
    return (int(match.group(1)), int(match.group(2))) if match else None


def version_problem(text) -> str | None:
    """Why `text` cannot be modelled (the message names the flag), or None."""
    version = parse_version(text)
    if version is None:
        return f"{FLAG} must look like 4.45.2 or 5.0, got {text!r}"
    if version < OLDEST or version[0] > NEWEST_MAJOR:
        return f"{FLAG} {text} is outside the modelled range 4.0 to {NEWEST_MAJOR}.x"
    return None


def _clamped(text: str) -> tuple[int, int]:
    """An installed version past the table's range is modelled by its nearest row."""
    version = parse_version(text) or parse_version(BUILT_FOR)
    return max(OLDEST, min(version, (NEWEST_MAJOR, 10**6)))


@cache
def installed_stack() -> Stack:
    """The transformers this Python has (read once, lazily), else the one the estimator was built for."""
    from importlib import metadata

    try:
        return Stack(metadata.version("transformers"), "installed")
    except metadata.PackageNotFoundError:
        return Stack(BUILT_FOR, "default")


def stack_for(transformers_version: str | None) -> Stack:
    """The stack a run is modelled for: `--transformers-version` when given, else the installed one."""
    return installed_stack() if transformers_version is None else _flag_stack(transformers_version)


@cache
def _flag_stack(version: str) -> Stack:
    return Stack(version, "flag")
