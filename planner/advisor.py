"""The advisor: search the configuration space with the estimator, keep what fits, rank it.

Defaults from practice, each one carried with its reason so the user sees why:
LoRA/QLoRA learning rate ~2e-4 (1e-4 above ~13B), full fine-tuning ~2e-5, DoRA a little lower
than LoRA; all-linear targets before attention-only (targets matter more than rank); alpha = 2r
and rsLoRA from r = 64; an effective batch of ~16 kept by gradient accumulation; fp16 with a
warning on GPUs without bf16; dataset size -> rank and epochs (the design notes' table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import product

from .errors import ConfigError
from .estimator import Estimate, estimate
from .overhead import Corrections
from .sharding import ParallelPlan, shard
from .methods import METHOD_KEYS, METHODS, method_record
from .specs import GpuSpec, ModelSpec, RunConfig

GOALS = ("quality", "speed", "memory")
RANKS = (4, 8, 16, 32, 64, 128)
MICRO_BATCHES = (1, 2, 4, 8, 16, 32)
TARGET_SETS = (("all-linear",), ("attention",))
OPTIMIZERS = ("adamw", "adamw-8bit", "paged-adamw-8bit")
EFFECTIVE_BATCH = 16
FULL_ON_SMALL_DATA = 1.25  # a small dataset gains little from updating every weight


@dataclass(frozen=True)
class DatasetAdvice:
    """What the dataset size says about rank, epochs and whether full fine-tuning is worth it."""

    target_rank: int
    epochs: int
    full_worth_it: bool
    reason: str


def dataset_advice(examples: int | None) -> DatasetAdvice:
    """The design notes' table: <1K r≈4, 1K-10K r 8-16, 10K-100K r 16-32, >100K full or high rank."""
    if examples is None:
        return DatasetAdvice(16, 2, False, "dataset size unknown: rank 16, 2 epochs (pass --dataset or --dataset-size to tune)")
    if examples < 1_000:
        return DatasetAdvice(4, 3, False, f"{examples:,} examples (<1K): a small rank (~4) and 3 epochs avoid overfitting")
    if examples < 10_000:
        return DatasetAdvice(16, 2, False, f"{examples:,} examples (1K-10K): rank 8-16, 2-3 epochs")
    if examples < 100_000:
        return DatasetAdvice(32, 2, False, f"{examples:,} examples (10K-100K): rank 16-32, 1-2 epochs")
    return DatasetAdvice(64, 1, True, f"{examples:,} examples (>100K): full fine-tuning or a high rank, 1 epoch")


@dataclass(frozen=True)
class Recommendation:
    estimate: Estimate  # per GPU when `parallel` is set
    grad_accum: int
    learning_rate: float
    epochs: int
    quality_score: float
    speed_score: float
    reasons: tuple[str, ...]
    parallel: ParallelPlan | None = None

    @property
    def run(self) -> RunConfig:
        return self.estimate.run


def learning_rate(method: str, model: ModelSpec) -> tuple[float, str]:
    """The method record's starting lr, halved for adapters above ~13B."""
    record = method_record(method)
    big = model.base_params > 13.5e9 and not record.trains_base
    lr = record.lr / 2 if big else record.lr
    return lr, record.lr_reason.format(lr=lr, size_note=" (halved above ~13B)" if big else "")


def _quality(run: RunConfig, advice: DatasetAdvice) -> float:
    """The method's prior (its record), plus targets and rank for adapters that have them."""
    method = run.method_record
    if method.trains_base:
        return method.quality if advice.full_worth_it else min(method.quality, FULL_ON_SMALL_DATA)
    if method.adapter is None or not method.adapter.uses_rank:
        return method.quality
    targets = 0.5 if run.targets == ("all-linear",) else 0.0  # targets matter more than rank
    rank = -0.15 * abs(math.log2(run.rank / advice.target_rank))
    return method.quality + targets + rank


# The switches that make a run fit when nothing else does, cheapest first: the search adds them
# one at a time, each on top of the previous ones. (RunConfig field, value, speed factor, what it is)
SAVER_STEPS = (
    ("expandable_segments", True, 1.0, "expandable segments (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True): less allocator slack, no speed cost"),
    ("loss", "chunked", 0.97, "chunked loss (--loss chunked): the full logits never exist; the head runs again per chunk in backward, ~3% slower"),
    ("offload_activations", True, 0.85, "activation offloading (--offload-activations): the checkpointed layer inputs wait in host RAM; a copy out and back per layer, ~15% slower"),
    # last: no speed cost, but 16-bit norms and head are less forgiving numerically than fp32 ones
    ("kbit_upcast", False, 1.0, "16-bit embeddings, norms and head on a 4-bit base (--no-kbit-upcast): skips prepare_model_for_kbit_training's fp32 upcast, which also halves the residual stream; no speed cost, less numerical headroom (fp16: watch the loss)"),
)


def _speed(run: RunConfig) -> float:
    """Relative tokens/s, from the costs that change it most (rough, for ranking only)."""
    speed = run.method_record.speed  # NF4 dequantization, DoRA's weight norm, ...
    for field, value, factor, _ in SAVER_STEPS:
        if getattr(run, field) == value:
            speed *= factor
    if run.grad_ckpt:
        speed *= 0.75  # recomputing the forward costs about a third more compute
    if run.optimizer != "adamw":
        speed *= 0.98
    speed *= min(1.0, run.tokens / 8192) ** 0.25  # small micro-batches leave the GPU idle
    return speed


def _reasons(run: RunConfig, gpu: GpuSpec, grad_accum: int, lr_reason: str, advice: DatasetAdvice, replicas: int = 1) -> tuple[str, ...]:
    method = run.method_record
    reasons = [advice.reason, lr_reason]
    if method.base.reason:
        reasons.append(method.base.reason)
    if method.adapter is not None:
        reasons += method.adapter.reasons(run)
    gpus_note = f" x {replicas} GPUs" if replicas > 1 else ""
    reasons.append(f"micro-batch {run.batch} x grad accumulation {grad_accum}{gpus_note} = effective batch {run.batch * grad_accum * replicas}")
    reasons.append("gradient checkpointing on: trades ~25% speed for activation memory" if run.grad_ckpt else "gradient checkpointing off: fits without it, ~25% faster")
    if run.optimizer != "adamw":
        reasons.append(f"{run.optimizer}: 8-bit Adam states (paged ones spill to host memory under pressure)")
    if not gpu.bf16:
        reasons.append(f"{gpu.name} has no bf16: fp16 — watch for overflow (loss scaling, lower lr if the loss spikes)")
    return tuple(reasons)


def candidates(seq_len: int, precision: str, methods: tuple[str, ...], fixed: dict | None = None, gpus: int = 1) -> list[RunConfig]:
    """Every config the search tries; `fixed` settings (attention, packing, loss) are the same in all.

    Each micro-batch comes with the accumulation that makes the effective batch, since
    accumulated gradients stay live through the later micro-batches."""
    fixed = fixed or {}
    runs = []
    for method, ckpt, optimizer, batch in product(methods, (False, True), OPTIMIZERS, MICRO_BATCHES):
        if fixed.get("offload_activations") and not ckpt:
            continue  # offloading moves the checkpointed inputs: it needs checkpointing
        fixed = {**fixed, "grad_accum": max(1, math.ceil(EFFECTIVE_BATCH / (batch * gpus)))}
        adapter = method_record(method).adapter
        if adapter is None or not adapter.uses_rank:
            runs.append(RunConfig(method=method, batch=batch, seq_len=seq_len, grad_ckpt=ckpt, optimizer=optimizer, precision=precision, **fixed))
            continue
        for rank, targets in product(RANKS, TARGET_SETS):
            runs.append(RunConfig(method=method, rank=rank, targets=targets, batch=batch, seq_len=seq_len, grad_ckpt=ckpt, optimizer=optimizer, precision=precision, **fixed))
    return runs


def recommend(
    model: ModelSpec,
    gpu: GpuSpec,
    seq_len: int,
    goal: str = "quality",
    dataset_size: int | None = None,
    corrections: Corrections | None = None,
    margin_ratio: float = 0.05,
    methods: tuple[str, ...] = METHOD_KEYS,
    top: int = 5,
    gpus: int = 1,
    fixed: dict | None = None,  # settings the search keeps, e.g. a --from file's attention, packing and loss
) -> list[Recommendation]:
    """Configs that fit `gpu` (each of `gpus`) with `margin_ratio` of its memory to spare, best first for `goal`.

    With several GPUs each config gets the least sharding that fits: DDP, then ZeRO-2, then
    FSDP full shard (communication grows in that order).

    Raises:
        ConfigError: unknown goal, or nothing fits (the message says what to change).
    """
    if goal not in GOALS:
        raise ConfigError(f"--goal {goal!r} is not one of: {', '.join(GOALS)}")
    advice = dataset_advice(dataset_size)
    precision = "bf16" if gpu.bf16 else "fp16"
    budget = gpu.total_bytes * (1 - margin_ratio)
    fixed = dict(fixed or {})
    fitting = _fitting(model, gpu, seq_len, precision, methods, fixed, gpus, budget, corrections)
    savers = [step for step in SAVER_STEPS if step[0] not in fixed]
    while not fitting and savers:  # nothing fits: add the next cheapest switch and search again
        field, value, _, _ = savers.pop(0)
        fixed[field] = value
        fitting = _fitting(model, gpu, seq_len, precision, methods, fixed, gpus, budget, corrections)
    if not fitting:
        raise ConfigError(_nothing_fits(model, gpu, seq_len, margin_ratio, gpus, precision, corrections))
    recommendations = []
    for result, parallel in fitting:
        run = result.run
        replicas = parallel.gpus if parallel else 1
        grad_accum = max(1, math.ceil(EFFECTIVE_BATCH / (run.batch * replicas)))
        lr, lr_reason = learning_rate(run.method, model)
        reasons = _reasons(run, gpu, grad_accum, lr_reason, advice, replicas)
        if parallel is not None:
            reasons += (STRATEGY_REASONS[parallel.strategy].format(n=parallel.gpus),)
        speed = _speed(run) * (STRATEGY_SPEED[parallel.strategy] if parallel else 1.0)
        recommendations.append(Recommendation(result, grad_accum, lr, advice.epochs, _quality(run, advice), speed, reasons, parallel))
    key = {
        "quality": lambda r: (round(r.quality_score, 6), r.speed_score, -r.estimate.breakdown.device_used_bytes),
        "speed": lambda r: (round(r.speed_score, 6), r.quality_score, -r.estimate.breakdown.device_used_bytes),
        "memory": lambda r: (-r.estimate.breakdown.device_used_bytes, r.quality_score, r.speed_score),
    }[goal]
    recommendations.sort(key=key, reverse=True)
    return [_with_saver_reasons(rec, model, gpu, corrections) for rec in _distinct(recommendations, top)]


def _fitting(model, gpu, seq_len, precision, methods, fixed, gpus, budget, corrections) -> list:
    fitting = []
    for run in candidates(seq_len, precision, methods, fixed, gpus):
        try:
            placed = _place(estimate(model, run, gpu, corrections), gpus, budget, corrections)
        except ConfigError:
            continue  # a run this model cannot take (MoE: dropout or DoRA on the fused experts, which peft refuses)
        if placed is not None:
            fitting.append(placed)
    return fitting


def _with_saver_reasons(rec: Recommendation, model: ModelSpec, gpu: GpuSpec, corrections) -> Recommendation:
    """Say what each switch the search had to turn on buys: the GiB it saves on this config."""
    run, reasons = rec.run, list(rec.reasons)
    used = None  # this config's single-GPU device used, estimated once when a switch is on
    for field, value, _, what in SAVER_STEPS:
        if getattr(run, field) != value:
            continue
        used = used if used is not None else estimate(model, run, gpu, corrections).breakdown.device_used_bytes
        plain = replace(run, **{field: RunConfig.__dataclass_fields__[field].default})
        saved = estimate(model, plain, gpu, corrections).breakdown.device_used_bytes - used
        reasons.append(f"{what}; saves {saved / 2**30:.2f} GiB here")
    return replace(rec, reasons=tuple(reasons))

# least communication first: replicate everything, then shard states and grads, then parameters
STRATEGY_ORDER = ("ddp", "zero2", "fsdp")
STRATEGY_SPEED = {"ddp": 1.0, "zero2": 0.95, "fsdp": 0.85}
STRATEGY_REASONS = {
    "ddp": "DDP on {n} GPUs: each holds a full replica, no sharding needed",
    "zero2": "DeepSpeed ZeRO-2 on {n} GPUs: optimizer states and gradients sharded, weights replicated",
    "fsdp": "FSDP full shard on {n} GPUs: weights (frozen ones too), gradients and states divided by {n}",
}


def _place(single: Estimate, gpus: int, budget: float, corrections: Corrections | None):
    """(per-GPU estimate, plan) for the least sharding that fits the budget, or None."""
    if gpus == 1:
        return (single, None) if single.breakdown.device_used_bytes <= budget else None
    for strategy in STRATEGY_ORDER:
        plan = ParallelPlan(strategy, gpus)
        sharded = shard(single, plan, corrections)
        if sharded.breakdown.device_used_bytes <= budget:
            return replace(single, breakdown=sharded.breakdown), plan
    return None


# what to suggest when nothing fits: the default LoRA-style methods, a 4-bit base first (the leanest)
FALLBACK_METHODS = tuple(sorted(
    (key for key, record in METHODS.items() if record.default and record.adapter is not None and record.adapter.uses_rank),
    key=lambda key: not METHODS[key].quantizes_base,
))


def _nothing_fits(model, gpu, seq_len, margin_ratio, gpus, precision, corrections) -> str:
    """Say what would fit: how many GPUs of this kind a plain QLoRA / LoRA run needs under FSDP."""
    message = f"nothing fits {model.name} on {'one' if gpus == 1 else gpus} {gpu.name} at seq-len {seq_len} with a {margin_ratio:.0%} margin"
    budget = gpu.total_bytes * (1 - margin_ratio)
    for method in FALLBACK_METHODS:
        single = estimate(model, RunConfig(method=method, seq_len=seq_len, precision=precision, grad_accum=EFFECTIVE_BATCH), gpu, corrections)
        for n in range(max(2, gpus + 1), 65):
            if shard(single, ParallelPlan("fsdp", n), corrections).breakdown.device_used_bytes <= budget:
                label = method_record(method).title
                return (f"{message}: {label} r=16 would fit on {n} of them with FSDP full shard "
                        f"(add --gpus {n}), or try a shorter --seq-len or a bigger GPU")
    return f"{message}: {_longest_context(model, gpu, budget, precision, corrections)}try a bigger GPU or a smaller model"


def _longest_context(model, gpu, budget, precision, corrections) -> str:
    """The longest --seq-len the leanest LoRA-style run reaches on this GPU with every switch on."""
    from .limits import max_seq_len

    lean = RunConfig(method=FALLBACK_METHODS[0], rank=4, targets=("attention",), seq_len=64, precision=precision,
                     optimizer="paged-adamw-8bit", grad_accum=EFFECTIVE_BATCH, **{field: value for field, value, _, _ in SAVER_STEPS})
    longest = max_seq_len(model, lean, replace(gpu, total_bytes=int(budget)), corrections)
    if not longest:
        return ""
    return (f"with every memory saver on (chunked loss, activation offloading, expandable segments, 16-bit unquantized weights), "
            f"{method_record(lean.method).title} r=4 on attention fits up to --seq-len {longest:,}; ")


def _distinct(ranked: list[Recommendation], top: int) -> list[Recommendation]:
    """The best of each (method, targets, checkpointing) family, so alternatives differ in kind."""
    seen, chosen = set(), []
    for rec in ranked:
        family = (rec.run.method, rec.run.targets, rec.run.grad_ckpt)
        if family in seen:
            continue
        seen.add(family)
        chosen.append(rec)
        if len(chosen) == top:
            break
    return chosen


def margin_bytes(rec: Recommendation) -> int:
    return rec.estimate.gpu.total_bytes - rec.estimate.breakdown.device_used_bytes


__all__ = ["GOALS", "Recommendation", "dataset_advice", "margin_bytes", "recommend", "replace"]
