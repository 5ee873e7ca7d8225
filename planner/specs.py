"""Frozen dataclasses that describe a model, a GPU and one fine-tuning run.

Each validates itself in `__post_init__` and reports every problem at once, naming the CLI
flag, the bad value and what is allowed (the peft `LoraConfig` style).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache, cached_property

from .errors import ConfigError
from .families import INPUT_GROUPS, LINEAR_GROUPS, Family, family_of

OPTIMIZERS = ("adamw", "adamw-8bit", "paged-adamw-8bit", "paged-adamw-32bit", "sgd")
PRECISIONS = ("bf16", "fp16", "fp32", "bf16-mixed", "fp16-mixed")
ATTENTIONS = ("sdpa", "eager", "flash")
ADAPTER_DTYPES = ("fp32", "bf16", "fp16")
DEVICE_KINDS = ("cuda", "cpu")
TARGET_PRESETS = ("attention", "mlp", "all-linear")
LOSSES = ("standard", "chunked", "fused")  # how the loss is computed (planner/savers.py)


@dataclass(frozen=True)
class LinearSpec:
    """One Linear module that appears once in every layer of a component."""

    name: str  # the module's attribute name, e.g. "q_proj" (what PEFT's target_modules matches)
    in_features: int
    out_features: int
    bias: bool
    group: str  # "attention" or "mlp": what the target presets select
    reads: str = ""  # the tensor it reads, one of INPUT_GROUPS; "" means "<group>_in"
    # where dense and sparse layers alternate (DeepSeek): "" in every layer, "dense" only in the dense
    # layers, "sparse" only in the sparse ones (ModelSpec.layer_kinds)
    layer_kind: str = ""
    adaptable: bool = True  # False: no --targets reaches it (peft maps DeepSeek's MLP names to the experts)

    def __post_init__(self) -> None:
        if not self.reads:
            object.__setattr__(self, "reads", f"{self.group}_in")
        problems = []
        if self.group not in LINEAR_GROUPS:
            problems.append(f"group {self.group!r} is not one of {', '.join(LINEAR_GROUPS)}")
        if self.reads not in INPUT_GROUPS:
            problems.append(f"reads {self.reads!r} is not one of {', '.join(INPUT_GROUPS)}")
        if self.layer_kind not in ("", "dense", "sparse"):
            problems.append(f"layer_kind {self.layer_kind!r} is not one of '', dense, sparse")
        if problems:
            raise ValueError(f"Linear {self.name!r}: " + "; ".join(problems))

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


COMPONENT_ROLES = ("decoder", "vision", "projector", "experts", "other")


@dataclass(frozen=True)
class Component:
    """One part of a model that owns parameters: the text decoder today; a vision tower, a
    projector or an expert block next. A model is the list of its components."""

    name: str  # unique in the model: "decoder", "vision_tower", "multi_modal_projector", ...
    role: str  # one of COMPONENT_ROLES: how the planner treats it
    num_layers: int  # identical blocks (layers, experts); 0 for a component of shared tensors only
    linears: tuple[LinearSpec, ...] = ()  # the Linears of one block
    other_params_per_layer: int = 0  # every other weight of one block (norms)
    shared_params: int = 0  # outside the blocks: embeddings, final norm, lm_head, ...
    family: str = ""  # model_type of the family record that lays the blocks out; "" if inventoried

    def __post_init__(self) -> None:
        problems = []
        if self.role not in COMPONENT_ROLES:
            problems.append(f"role {self.role!r} is not one of {', '.join(COMPONENT_ROLES)}")
        for field_name in ("num_layers", "other_params_per_layer", "shared_params"):
            if getattr(self, field_name) < 0:
                problems.append(f"{field_name} {getattr(self, field_name)} < 0")
        if problems:
            raise ValueError(f"component {self.name!r}: " + "; ".join(problems))

    @property
    def layer_linear_params(self) -> int:
        return sum(linear.params for linear in self.linears)

    @property
    def linear_params(self) -> int:
        return self.num_layers * self.layer_linear_params

    @property
    def params(self) -> int:
        return self.num_layers * (self.layer_linear_params + self.other_params_per_layer) + self.shared_params


@dataclass(frozen=True)
class ModelSpec:
    """A model as the planner sees it: a text decoder, plus any other components.

    The flat fields are the text decoder's architecture numbers (every causal LM has one; the
    activation and logits terms read them); `extra_components` holds the rest (a vision tower,
    a projector, ...). `components` lists them all and `base_params` is their sum.
    """

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
    extra_components: tuple[Component, ...] = ()  # beside the text decoder: vision tower, projector, ...
    sliding_window: int = 0  # attention window on every layer (Mistral, Phi-3); 0: none
    sdpa: bool = True  # False: the family has no SDPA path, so `--attention sdpa` runs eager (Gemma-2)
    norm_scale_fp32: bool = False  # RMSNorm multiplies its weight in fp32 (Gemma: x̂ * (1 + w))
    fused_qkv: bool = False  # q, k and v come out of one Linear (Phi-3's qkv_proj)
    attn_softcap: bool = False  # Gemma-2 tanh-caps the attention scores: one more batch·heads·seq² tensor
    attention_sinks: bool = False  # gpt-oss: a sink logit per head joins each softmax row (seq + 1 columns)
    # mixture of experts (planner/moe.py): E experts of MLP width I per layer, k per token; their
    # weights are the "experts" component, and `intermediate_size` is then k * I (balanced routing)
    num_experts: int = 0
    experts_per_token: int = 0
    expert_intermediate_size: int = 0
    # config.json's output_router_logits: training adds the router load-balancing (aux) loss
    router_aux_loss: bool = False
    # DeepSeek-V2's multi-head latent attention (planner/mla.py); head_dim is then q and k's (nope + rope)
    kv_lora_rank: int = 0  # 0: not MLA
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    # DeepSeek: the first `dense_layers` layers hold a dense MLP of `dense_intermediate_size` instead of
    # the sparse one; the sparse layers add shared experts, one dense MLP of `shared_expert_intermediate_size`
    dense_layers: int = 0
    dense_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0

    @property
    def embed_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_embeddings else self.vocab_size * self.hidden_size

    @cached_property
    def layer_linear_params(self) -> int:
        """One layer's Linears (the larger kind where dense and sparse layers differ)."""
        return max(sum(linear.params for linear in view.linears) for view, _ in self.layer_kinds)

    @cached_property
    def linear_params(self) -> int:
        """Parameters in decoder-layer Linears: what bitsandbytes quantizes (lm_head stays)."""
        return sum(self.linear_layers(linear) * linear.params for linear in self.linears)

    @property
    def sparse_layers(self) -> int:
        """Layers with a router and experts (all but DeepSeek's leading dense layers); 0 for a dense model."""
        return self.num_layers - self.dense_layers if self.num_experts else 0

    def linear_layers(self, linear: LinearSpec) -> int:
        """How many decoder layers hold this Linear."""
        return {"": self.num_layers, "dense": self.dense_layers, "sparse": self.num_layers - self.dense_layers}[linear.layer_kind]

    @cached_property
    def layer_kinds(self) -> tuple[tuple[ModelSpec, int], ...]:
        """(a model of uniform layers, how many layers are like it), in layer order: DeepSeek's dense
        layers (their MLP, no experts), then its sparse ones; a uniform model is itself, num_layers times."""
        if not self.dense_layers:
            return ((self, self.num_layers),)
        every = tuple(linear for linear in self.linears if not linear.layer_kind)

        def kind(name: str) -> tuple[LinearSpec, ...]:
            return every + tuple(replace(linear, layer_kind="") for linear in self.linears if linear.layer_kind == name)

        dense = replace(
            self, linears=kind("dense"), intermediate_size=self.dense_intermediate_size, dense_layers=0, num_experts=0,
            experts_per_token=0, expert_intermediate_size=0, shared_expert_intermediate_size=0, extra_components=(), router_aux_loss=False,
        )
        sparse = replace(self, linears=kind("sparse"), dense_layers=0, dense_intermediate_size=0)
        return ((dense, self.dense_layers), (sparse, self.num_layers - self.dense_layers))

    @cached_property
    def norm_params(self) -> int:
        return self.num_layers * self.norm_params_per_layer + self.final_norm_params

    @cached_property
    def components(self) -> tuple[Component, ...]:
        """The text decoder (embeddings, layers, final norm, lm_head), what else the inventory
        found, and the extra components."""
        decoder = Component(
            name="decoder",
            role="decoder",
            num_layers=self.num_layers,
            linears=tuple(linear for linear in self.linears if not linear.layer_kind),
            other_params_per_layer=self.norm_params_per_layer,
            shared_params=self.embed_params + self.final_norm_params + self.lm_head_params,
            family=self.model_type if self.family is not None else "",
        )
        other = (Component("other", "other", 0, shared_params=self.extra_params),) if self.extra_params else ()
        # DeepSeek: the MLP of the dense layers, and the shared experts of the sparse ones
        kinds = tuple(
            Component(name, "decoder", self.linear_layers(linears[0]), linears, family=self.model_type)
            for name, kind in (("dense_mlp", "dense"), ("shared_experts", "sparse"))
            if (linears := tuple(linear for linear in self.linears if linear.layer_kind == kind))
        )
        return (decoder, *kinds, *other, *self.extra_components)

    @cached_property
    def expert_params(self) -> int:
        """Router and expert weights (the "experts" components): not nn.Linear, so never 4-bit."""
        return sum(c.params for c in self.extra_components if c.role == "experts")

    @cached_property
    def base_params(self) -> int:
        return sum(component.params for component in self.components)

    @cached_property
    def family(self) -> Family | None:
        """The family record of the text decoder (`planner.families`), None for an inventoried model."""
        return family_of(self.model_type)

    @cached_property
    def _linears_by_name(self) -> dict[str, LinearSpec]:
        return {linear.name: linear for linear in self.linears}

    @cached_property
    def input_groups(self) -> dict[str, tuple[str, ...]]:
        """Linears that read the same tensor (`LinearSpec.reads`), e.g. q/k/v (attention_in),
        o (attn_out), gate/up (mlp_in), down (mlp_prod)."""
        groups: dict[str, list[str]] = {}
        for linear in self.linears:
            groups.setdefault(linear.reads, []).append(linear.name)
        return {key: tuple(names) for key, names in groups.items()}

    def linear(self, name: str) -> LinearSpec:
        return self._linears_by_name[name]

    def module_names(self) -> tuple[str, ...]:
        """The Linears --targets can name (DeepSeek's MLP Linears are not among them)."""
        return tuple(name for name, linear in self._linears_by_name.items() if linear.adaptable)


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
    # settings only some methods have (`MethodOption`s of the method's record), as sorted pairs
    method_options: tuple[tuple[str, object], ...] = ()
    # memory savers (planner/savers.py); the defaults are the plain run
    loss: str = "standard"  # standard: full logits; chunked: head + loss per token chunk; fused: Liger FLCE
    loss_chunk: int = 1024  # tokens per chunk of --loss chunked
    offload_activations: bool = False  # checkpointed layer inputs kept in host RAM (save_on_cpu)
    packing: bool = False  # padding-free batches: examples packed, position ids reset per example
    expandable_segments: bool = False  # PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
    # 4-bit-base methods: prepare_model_for_kbit_training's fp32 upcast of the unquantized weights;
    # False keeps embeddings, norms and lm_head 16-bit (no effect on other methods)
    kbit_upcast: bool = True
    # micro-batches per optimizer step: above 1, the gradients outlive the step's own backward and
    # are live through every later micro-batch's forward and backward
    grad_accum: int = 1
    # the transformers version whose memory paths are modelled (planner/stack.py); None: the installed one
    transformers_version: str | None = None
    # CUDA's math-kernel SDPA fallback for fp32 with grouped kv heads (planner/sdpa_dispatch.py);
    # False re-estimates traces made before the trace emulated it
    cuda_math_sdpa: bool = True

    def __post_init__(self) -> None:
        # plan, JSON and store round trips hand back a dict or lists: keep one hashable, ordered form
        # (skipped for the usual empty tuple: planners build RunConfigs in tight loops)
        options = self.method_options
        if options or type(options) is not tuple:
            options = options.items() if isinstance(options, dict) else options
            object.__setattr__(self, "method_options", tuple(sorted((str(key), value) for key, value in options)))
        problems = list(_run_problems(self))
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.rank

    @property
    def method_record(self):
        """The method's record (`planner.methods.Method`)."""
        return _registry().METHODS[self.method]

    @property
    def is_quantized(self) -> bool:
        return self.method_record.quantizes_base

    @property
    def has_adapter(self) -> bool:
        return self.method_record.has_adapter

    @property
    def uses_rank(self) -> bool:
        """--rank/--alpha/--dropout/--targets apply (LoRA-style adapters)."""
        adapter = self.method_record.adapter
        return adapter is not None and adapter.uses_rank

    def option(self, name: str):
        """A method option's value: what was set, else the option's default (None: derived from the model)."""
        for key, value in self.method_options:
            if key == name:
                return value
        return next(option.default for option in _registry().method_options() if option.name == name)

    @property
    def tokens(self) -> int:
        return self.batch * self.seq_len


@cache
def _registry():
    """`planner.methods`, bound on first use: it imports this module. Its attributes are read on
    each use, so a record registered at run time (tests do) is seen."""
    from . import methods

    return methods


def _choice_problem(flag: str, value: str, allowed: tuple[str, ...]) -> str | None:
    if value in allowed:
        return None
    return f"{flag} {value!r} is not one of: {', '.join(allowed)}"


def _run_problems(run: RunConfig):
    for flag, value, allowed in (
        ("--method", run.method, _registry().METHOD_KEYS),
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
    if not isinstance(run.grad_accum, int) or isinstance(run.grad_accum, bool) or run.grad_accum < 1:
        yield f"--grad-accum must be a whole number of at least 1, got {run.grad_accum!r}"
    if not isinstance(run.kbit_upcast, bool):
        yield f"--kbit-upcast must be true or false, got {run.kbit_upcast!r}"
    if run.transformers_version is not None:
        from .stack import version_problem

        problem = version_problem(run.transformers_version)
        if problem:
            yield problem
    if (run.loss, run.loss_chunk, run.offload_activations, run.packing) != ("standard", 1024, False, False):
        from .savers import saver_problems  # only a run that asks for a saver pays for the import

        yield from saver_problems(run)
    if not run.method_options:
        return  # the registry walk below is most of a RunConfig's cost
    known = {option.name: option for option in _registry().method_options()}
    for name, value in run.method_options:
        if name not in known:
            yield f"unknown method option {name!r}; known: {', '.join(known) or 'none'}"
        elif (problem := known[name].problem(value)) is not None:
            yield problem
