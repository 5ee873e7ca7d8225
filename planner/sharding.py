"""Per-GPU memory under data parallelism and sharding: DDP, FSDP and DeepSpeed ZeRO stages.

Starts from the single-GPU breakdown and divides what each engine divides (ZeRO paper,
Rajbhandari et al. 2020, §5; PyTorch FSDP docs): optimizer states from ZeRO-1 on, gradients
from ZeRO-2 / FSDP SHARD_GRAD_OP, parameters under ZeRO-3 / FSDP FULL_SHARD — frozen base
weights included. Activations are never sharded. Engines add their own buffers, named below.
QLoRA under FSDP / ZeRO-3 needs bnb_4bit_quant_storage equal to the compute dtype so that the
4-bit weights can be flattened with the rest; the bytes stay 0.5 per weight.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .breakdown import ALL_PHASES, BACKWARD, BACKWARD_END, FORWARD, OPTIMIZER, MemoryBreakdown, Term
from .errors import ConfigError
from .estimator import Estimate
from .overhead import Corrections, overhead_terms

STRATEGIES = ("ddp", "fsdp", "fsdp-grad-op", "zero1", "zero2", "zero3")
OFFLOADS = ("none", "optimizer", "params")
SHARDS_OPTIMIZER = ("fsdp", "fsdp-grad-op", "zero1", "zero2", "zero3")
SHARDS_GRADS = ("fsdp", "fsdp-grad-op", "zero2", "zero3")
SHARDS_PARAMS = ("fsdp", "zero3")  # SHARD_GRAD_OP keeps parameters gathered from forward to the end of backward
DEEPSPEED = ("zero1", "zero2", "zero3")
ZERO_BUCKET_ELEMENTS = 500_000_000  # DeepSpeed's default reduce_bucket_size / allgather_bucket_size


@dataclass(frozen=True)
class ParallelPlan:
    strategy: str
    gpus: int
    offload: str = "none"

    def __post_init__(self) -> None:
        problems = []
        if self.strategy not in STRATEGIES:
            problems.append(f"--strategy {self.strategy!r} is not one of: {', '.join(STRATEGIES)}")
        if self.offload not in OFFLOADS:
            problems.append(f"--offload {self.offload!r} is not one of: {', '.join(OFFLOADS)}")
        if not isinstance(self.gpus, int) or self.gpus < 2:
            problems.append(f"--gpus must be 2 or more with --strategy, got {self.gpus!r}")
        if self.offload == "params" and self.strategy not in SHARDS_PARAMS:
            problems.append(f"--offload params needs a parameter-sharding strategy (fsdp or zero3), not {self.strategy}")
        if self.offload != "none" and self.strategy == "ddp":
            problems.append("--offload needs fsdp or a DeepSpeed ZeRO stage; DDP keeps everything on the GPU")
        if problems:
            raise ConfigError("; ".join(problems))


@dataclass(frozen=True)
class ShardedEstimate:
    """What one GPU of `plan.gpus` holds, plus the host RAM that offloading needs (per node)."""

    single: Estimate
    plan: ParallelPlan
    breakdown: MemoryBreakdown
    host_bytes: int

    @property
    def fits(self) -> bool | None:
        gpu = self.single.gpu
        return None if gpu is None else self.breakdown.device_used_bytes <= gpu.total_bytes


def _family(term: Term, trainable_base: bool) -> str:
    head = term.name.split("/")[0]
    if head == "weights":
        return "trainable_params" if (trainable_base or term.name == "weights/adapter") else "frozen_params"
    return head  # grads, optimizer, activations, overhead


def _layer_param_bytes(single: Estimate) -> int:
    """One decoder layer's parameters as stored: what FULL_SHARD / ZeRO-3 all-gathers at a time."""
    run = single.run
    per_param = 0.5 if run.method_record.quantizes_base else (2 if run.precision in ("bf16", "fp16") else 4)
    return int(single.model.layer_linear_params * per_param)


def shard(single: Estimate, plan: ParallelPlan, corrections: Corrections | None = None) -> ShardedEstimate:
    """Per-GPU breakdown of `single` under `plan`."""
    n = plan.gpus
    trainable_base = single.run.method_record.trains_base
    terms: list[Term] = []
    host = 0
    grads_bytes = 0
    for term in single.breakdown.terms:
        if term.name.startswith("overhead/"):
            continue  # recomputed on the per-GPU tensors below
        family = _family(term, trainable_base)
        divide = (
            (family == "optimizer" and plan.strategy in SHARDS_OPTIMIZER)
            or (family == "grads" and plan.strategy in SHARDS_GRADS)
            or (family in ("trainable_params", "frozen_params") and plan.strategy in SHARDS_PARAMS)
        )
        new = replace(term, bytes=term.bytes // n, note=f"{term.note}; / {n} GPUs") if divide else term
        if family == "optimizer" and plan.offload in ("optimizer", "params"):
            host += term.bytes  # every rank's shard lands in the same node's RAM
            new = replace(new, bytes=0, note=f"{term.note}; offloaded to host RAM")
        if family in ("trainable_params", "frozen_params") and plan.offload == "params":
            host += term.bytes
            new = replace(new, bytes=0, note=f"{term.note}; offloaded to host RAM")
        if family == "grads":
            grads_bytes += term.bytes
        terms.append(new)
    terms += _engine_terms(single, plan, grads_bytes)
    allocated = MemoryBreakdown(tuple(terms)).peak_allocated_bytes
    terms += overhead_terms(single.run, single.gpu, allocated, corrections or Corrections())
    return ShardedEstimate(single, plan, MemoryBreakdown(tuple(terms)), host)


def _engine_terms(single: Estimate, plan: ParallelPlan, grads_bytes: int) -> list[Term]:
    """Buffers the engines add on each GPU."""
    if plan.strategy == "ddp":
        # gradient_as_bucket_view=False (the default): DDP's flat buckets hold a second copy of the grads
        return [Term("distributed/ddp_buckets", grads_bytes, "DDP gradient buckets: a flat copy of every gradient", ALL_PHASES)]
    terms = []
    if plan.strategy in SHARDS_PARAMS:
        unit = _layer_param_bytes(single)
        terms.append(Term("distributed/gathered_params", 2 * unit, "all-gathered decoder layer, current + prefetched", frozenset({FORWARD, BACKWARD, BACKWARD_END})))
    if plan.strategy in DEEPSPEED:
        trainable = single.trainable_params
        dtype_bytes = 4 if single.run.precision.endswith("-mixed") or single.run.precision == "fp32" else 2
        bucket = min(ZERO_BUCKET_ELEMENTS, trainable) * dtype_bytes
        terms.append(Term("distributed/zero_buckets", bucket, "DeepSpeed reduce bucket (reduce_bucket_size 5e8 elements)", frozenset({BACKWARD, BACKWARD_END, OPTIMIZER})))
    return terms


def gpus_needed(single: Estimate, strategy: str, offload: str = "none", max_gpus: int = 64) -> int | None:
    """The fewest GPUs of `single.gpu`'s kind on which `strategy` fits, or None up to `max_gpus`."""
    for n in range(2, max_gpus + 1):
        if shard(single, ParallelPlan(strategy, n, offload)).fits:
            return n
    return None
