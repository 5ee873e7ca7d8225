"""Frozen dataclasses that describe a model, a GPU and one fine-tuning run.

Each validates itself in `__post_init__` and reports every problem at once, naming the CLI
flag, the bad value and what is allowed (the peft `LoraConfig` style).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .errors import ConfigError

METHODS = ("full", "lora", "qlora", "dora", "qdora")
QUANTIZED_METHODS = ("qlora", "qdora")
DORA_METHODS = ("dora", "qdora")
OPTIMIZERS = ("adamw", "adamw-8bit", "paged-adamw-8bit", "paged-adamw-32bit", "sgd")
PRECISIONS = ("bf16", "fp16", "fp32", "bf16-mixed", "fp16-mixed")
ATTENTIONS = ("sdpa", "eager", "flash")
ADAPTER_DTYPES = ("fp32", "bf16", "fp16")
DEVICE_KINDS = ("cuda", "cpu")
TARGET_PRESETS = ("attention", "mlp", "all-linear")


@dataclass(frozen=True)
class LinearSpec:
    """One Linear module that appears once in every decoder layer."""

    name: str  # the module's attribute name, e.g. "q_proj" (what PEFT's target_modules matches)
    in_features: int
    out_features: int
    bias: bool
    group: str  # "attention" or "mlp": what the target presets select

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


@dataclass(frozen=True)
class ModelSpec:
    """Architecture numbers of a dense decoder-only transformer, enough to count every parameter."""

    name: str
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_embeddings: bool
    linears: tuple[LinearSpec, ...]  # per decoder layer
    norm_params_per_layer: int  # all norm weights inside one layer (incl. q/k norms)
    final_norm_params: int
    extra_params: int = 0  # anything else the inventory found (counted as frozen, bf16)
    gated_mlp: bool = True  # act(gate(x)) * up(x)
    norms_per_layer: int = 2  # RMSNorms applied on the residual stream per layer
    qk_norm: bool = False  # Qwen3 normalises q and k per head
    logit_softcap: bool = False  # Gemma-2 tanh-caps the logits: one more V-sized temporary
    source: str = "catalog"

    @property
    def embed_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_embeddings else self.vocab_size * self.hidden_size

    @cached_property
    def layer_linear_params(self) -> int:
        return sum(linear.params for linear in self.linears)

    @cached_property
    def linear_params(self) -> int:
        """Parameters in decoder-layer Linears: what bitsandbytes quantizes (lm_head stays)."""
        return self.num_layers * self.layer_linear_params

    @cached_property
    def norm_params(self) -> int:
        return self.num_layers * self.norm_params_per_layer + self.final_norm_params

    @cached_property
    def base_params(self) -> int:
        return self.linear_params + self.norm_params + self.embed_params + self.lm_head_params + self.extra_params

    @cached_property
    def _linears_by_name(self) -> dict[str, LinearSpec]:
        return {linear.name: linear for linear in self.linears}

    @cached_property
    def input_groups(self) -> dict[str, tuple[str, ...]]:
        """Linears that read the same tensor: q/k/v (attention_in), o (attn_out), gate/up (mlp_in), down (mlp_prod)."""
        groups: dict[str, list[str]] = {}
        for linear in self.linears:
            key = {"o_proj": "attn_out", "down_proj": "mlp_prod"}.get(linear.name, f"{linear.group}_in")
            groups.setdefault(key, []).append(linear.name)
        return {key: tuple(names) for key, names in groups.items()}

    def linear(self, name: str) -> LinearSpec:
        return self._linears_by_name[name]

    def module_names(self) -> tuple[str, ...]:
        return tuple(self._linears_by_name)


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model as the driver reports it."""

    key: str
    name: str
    total_bytes: int  # cudaMemGetInfo total: what torch.cuda.get_device_properties reports
    bf16: bool
    bandwidth_gbps: float = 0.0  # GB/s, published
    bf16_tflops: float = 0.0  # dense tensor-core TFLOPS (fp16 where bf16 is missing)
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunConfig:
    """Every knob of one fine-tuning run that changes its memory.

    `targets` holds what the user asked for (module names, short names like `q`, or the presets
    `attention`, `mlp`, `all-linear`, and `lm_head`); `planner.targets.resolve_targets` turns it
    into module names for a given model.
    """

    method: str = "qlora"
    rank: int = 16
    alpha: float | None = None  # None: 2 * rank
    dropout: float = 0.05
    targets: tuple[str, ...] = ("all-linear",)
    batch: int = 1
    seq_len: int = 2048
    grad_ckpt: bool = True
    optimizer: str = "adamw"
    precision: str = "bf16"
    attention: str = "sdpa"
    double_quant: bool = True
    adapter_dtype: str = "fp32"
    device_kind: str = "cuda"  # "cpu": the optimizer runs per tensor, no CUDA context

    def __post_init__(self) -> None:
        problems = list(_run_problems(self))
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.rank

    @property
    def is_quantized(self) -> bool:
        return self.method in QUANTIZED_METHODS

    @property
    def is_dora(self) -> bool:
        return self.method in DORA_METHODS

    @property
    def has_adapter(self) -> bool:
        return self.method != "full"

    @property
    def tokens(self) -> int:
        return self.batch * self.seq_len


def _choice_problem(flag: str, value: str, allowed: tuple[str, ...]) -> str | None:
    if value in allowed:
        return None
    return f"{flag} {value!r} is not one of: {', '.join(allowed)}"


def _run_problems(run: RunConfig):
    for flag, value, allowed in (
        ("--method", run.method, METHODS),
        ("--optimizer", run.optimizer, OPTIMIZERS),
        ("--precision", run.precision, PRECISIONS),
        ("--attention", run.attention, ATTENTIONS),
        ("--adapter-dtype", run.adapter_dtype, ADAPTER_DTYPES),
        ("--device", run.device_kind, DEVICE_KINDS),
    ):
        problem = _choice_problem(flag, value, allowed)
        if problem:
            yield problem
    for flag, value in (("--rank", run.rank), ("--batch", run.batch), ("--seq-len", run.seq_len)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            yield f"{flag} must be a whole number greater than 0, got {value!r}"
    if run.alpha is not None and run.alpha <= 0:
        yield f"--alpha must be greater than 0, got {run.alpha!r}"
    if not 0.0 <= run.dropout < 1.0:
        yield f"--dropout must be in [0, 1), got {run.dropout!r}"
    if not run.targets:
        yield "--targets is empty; give module names or one of: " + ", ".join(TARGET_PRESETS)
