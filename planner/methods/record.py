"""What a fine-tuning method is, as data: one frozen `Method` per method, composed of parts.

A method = how the base weights are held (`BaseWeights`: frozen 16/32-bit, NF4, or trainable)
+ the trainable module it adds (`AdapterKind`: LoRA, DoRA, a bottleneck adapter, or none)
+ what the advisor assumes of it. Everything elsewhere reads these fields; nothing asks for a
method by name. The torch side (how to build the adapter on a real model, save and reload it)
is named by an import path and loaded only when a run is built, so `planner` stays torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

Tensors = list  # [(numel, how many in the model), ...]


@dataclass(frozen=True)
class MethodOption:
    """A setting that only some methods have, e.g. the bottleneck size of an Adapter.

    The CLI adds `flag` to every command that shapes a run; `RunConfig.method_options` carries
    the value; `kind` is int or str; `choices` limits a str; `default=None` means "derived from
    the model" (the record's code says how).
    """

    name: str  # key in RunConfig.method_options and in plan/JSON files
    flag: str  # e.g. "--adapter-size"
    kind: type
    default: object
    help: str
    choices: tuple[str, ...] = ()

    def problem(self, value) -> str | None:
        """What is wrong with `value`, or None."""
        if value is None and self.default is None:
            return None
        if self.kind is int:
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                return f"{self.flag} must be a whole number greater than 0, got {value!r}"
        elif self.choices and value not in self.choices:
            return f"{self.flag} {value!r} is not one of: {', '.join(self.choices)}"
        return None


@dataclass(frozen=True)
class BaseWeights:
    """How the pretrained weights are held during training."""

    name: str
    quantized: bool  # decoder Linears stored as NF4 (bitsandbytes Linear4bit)
    trainable: bool  # every base weight trains (full fine-tuning)
    # (model, run, dt) -> [Term]: the weights and, when trainable, their gradients
    terms: Callable
    speed: float = 1.0  # relative step speed, for the advisor's ranking only
    reason: str = ""  # what the advisor says when it picks this base


@dataclass(frozen=True)
class AdapterKind:
    """A trainable module added to a frozen base: its tensors, its activations, its torch code."""

    name: str
    label: str  # names the weights in notes, e.g. "LoRA A/B"
    uses_rank: bool  # --rank/--alpha/--dropout/--targets apply
    # (model, run) -> tuple of placement names: the Linears wrapped, or where modules are inserted
    placements: Callable
    # (model, run, adapted) -> [(numel, count)]: every trainable tensor (optimizer states follow)
    tensors: Callable
    # (model, run, dt, adapted, input_dtypes) -> (bytes saved per layer, method-specific part)
    layer_saved: Callable
    # (model, run, dt, adapted, frozen layer's LayerActivations, input norm bytes) -> bytes layer 0
    # does not save without checkpointing, when its input needs no gradient
    first_layer_savings: Callable
    # (model, run, dt, adapted) -> [Term]: extra terms (e.g. DoRA's weight-norm temporaries)
    extra_terms: Callable = lambda model, run, dt, adapted: []
    widens_mlp_output: Callable = lambda adapted: False  # an fp32 adapter sum on gate/up outputs
    torch_module: str = ""  # "package.module" with attach(model, run), save(model, dir), load(model, dir)
    options: tuple[MethodOption, ...] = ()
    # (model, run, adapted) -> one line for people, e.g. "LoRA r=16 α=32 dropout=0.05 fp32 on q_proj,..."
    describe: Callable = lambda model, run, adapted: ""
    mergeable: bool = True  # can be folded into the base weights for inference (`run --merge`)
    # (model, run) -> {option name: value as resolved for this model}, for JSON and plan files
    resolved_options: Callable = lambda model, run: {}
    speed: float = 1.0
    reasons: Callable = lambda run: ()  # (run) -> advisor reasons for this adapter's settings


@dataclass(frozen=True)
class Method:
    """One fine-tuning method: everything the planner, the trainer and the reports need of it."""

    key: str  # --method value
    title: str  # display name in tables and charts
    summary: str  # one line for help and docs
    base: BaseWeights
    adapter: AdapterKind | None
    quality: float  # the advisor's prior: full 2.0 > LoRA 1.2 > 4-bit LoRA 1.1 (small, task-dependent gaps)
    lr: float = 2e-4  # starting learning rate below ~13B (halved above)
    lr_reason: str = ""
    default: bool = False  # compared by `estimate` when no --method is given
    options: tuple[MethodOption, ...] = field(default=())

    @property
    def quantizes_base(self) -> bool:
        return self.base.quantized

    @property
    def trains_base(self) -> bool:
        return self.base.trainable

    @property
    def has_adapter(self) -> bool:
        return self.adapter is not None

    @property
    def all_options(self) -> tuple[MethodOption, ...]:
        return self.options + (self.adapter.options if self.adapter else ())

    @property
    def speed(self) -> float:
        return self.base.speed * (self.adapter.speed if self.adapter else 1.0)
