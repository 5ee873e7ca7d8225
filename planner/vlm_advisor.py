"""The VLM advisor: the seeds' data-scale table, fitted to a GPU at the user's image size, as a
two-stage plan (stage 1 warms up the projector, stage 2 trains the projector and the LLM).

The table (design notes, "VLM fine-tuning"):

    < 1K examples     vision frozen, projector trained, QLoRA r4 on the LLM
    1K - 10K          LoRA r8-16
    10K - 100K        LoRA r16-32, the vision tower trained at a low lr (x0.1)
    > 100K            full fine-tuning (vision tower at x0.1)

When the table's choice does not fit, the search steps down: lower rank within the row, then a
4-bit base, a lower rank, a less trained vision tower; then expandable segments (the one memory
saver of the text advisor the VLM trainer applies); and only then a lower `--max-pixels` (families whose processor has one), saying what
that costs in image tokens and detail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .advisor import EFFECTIVE_BATCH, OPTIMIZERS, SAVER_STEPS, dataset_advice, learning_rate
from .errors import ConfigError
from .methods import method_record
from .overhead import Corrections
from .plan_file import VlmStagePlan
from .specs import GpuSpec, RunConfig
from .units import GIB
from .vision import VlmSpec
from .vision.run import VlmRun
from .vlm_estimate import VlmEstimate, estimate_vlm, image_plan

TEXT_TOKENS = 512  # a caption or a short conversation turn: the text budget beside the image tokens
STAGE1_LR = 1e-3  # LLaVA stage 1: the projector alone, a high lr
VISION_LR_SCALE = 0.1  # a trained vision tower moves at a tenth of the LLM's lr
MICRO_BATCHES = (4, 2, 1)
PIXEL_FRACTIONS = (0.75, 0.5, 0.25, 0.125, 0.0625, 0.03125)  # of an image's pixels, tried as --max-pixels when nothing fits
VLM_METHODS = ("full", "lora", "qlora")  # what the table speaks of
VISION_ORDER = ("full", "lora", "freeze")  # most trained first
# the text advisor's memory savers a VLM plan may turn on: only the allocator setting; the VLM trainer
# does not yet chunk a VLM's loss, offload its checkpoints or skip the kbit upcast (vlm_loop/vlm_build)
VLM_SAVER_STEPS = tuple(step for step in SAVER_STEPS if step[0] == "expandable_segments")


@dataclass(frozen=True)
class ScaleRow:
    """One row of the data-scale table: the LLM's (method, rank) steps, best first, and the vision tower."""

    llm: tuple[tuple[str, int | None], ...]  # the row's choice first, then what the row allows below it
    vision: str
    epochs: int
    reason: str

    @property
    def method(self) -> str:
        return self.llm[0][0]

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(rank for key, rank in self.llm if key == self.method and rank))


def describe(method: str, rank: int | None, vision: str) -> str:
    llm = method_record(method).title + (f" r{rank}" if rank and method_record(method).adapter is not None else "")
    tower = {"freeze": "vision frozen", "lora": "vision LoRA", "full": f"vision trained at x{VISION_LR_SCALE:g} lr"}[vision]
    return f"{llm}, {tower}"


def scale_row(examples: int | None) -> ScaleRow:
    """The table's row for `--dataset-size`."""
    epochs = dataset_advice(examples).epochs
    lora_8_16 = (("lora", 16), ("lora", 8), ("qlora", 16), ("qlora", 8))
    lora_16_32 = (("lora", 32), ("lora", 16), ("qlora", 32), ("qlora", 16))
    if examples is None:
        return ScaleRow(lora_8_16, "freeze", epochs, "dataset size unknown: the 1K-10K row, LoRA r8-16 with the vision tower frozen (pass --dataset-size N to tune)")
    if examples < 1_000:
        return ScaleRow((("qlora", 4),), "freeze", epochs, f"{examples:,} examples (<1K): vision tower frozen, projector trained, QLoRA r4 on the LLM: few examples overfit anything larger")
    if examples < 10_000:
        return ScaleRow(lora_8_16, "freeze", epochs, f"{examples:,} examples (1K-10K): LoRA r8-16 on the LLM, vision tower frozen")
    if examples < 100_000:
        return ScaleRow(lora_16_32, "full", epochs, f"{examples:,} examples (10K-100K): LoRA r16-32 on the LLM, the vision tower trained at x{VISION_LR_SCALE:g} the lr")
    return ScaleRow((("full", None), *lora_16_32), "full", epochs, f"{examples:,} examples (>100K): full fine-tuning, the vision tower at x{VISION_LR_SCALE:g} the lr")


@dataclass(frozen=True)
class Rung:
    """One step of the ladder: what the LLM and the vision tower train."""

    method: str
    rank: int | None
    vision: str
    quantize_vision: bool = False

    def title(self) -> str:
        return describe(self.method, self.rank, self.vision) + (" (NF4)" if self.quantize_vision else "")


def ladder(row: ScaleRow, methods: tuple[str, ...] = VLM_METHODS) -> list[Rung]:
    """The row's choice, then each step down; the LLM's method is kept longest (it is most of the quality)."""
    llm = list(row.llm) + [("qlora", rank) for rank in (8, 4) if ("qlora", rank) not in row.llm]
    visions = VISION_ORDER[VISION_ORDER.index(row.vision):]
    rungs = [Rung(method, rank, vision) for method, rank in llm for vision in visions if method in methods]
    if "qlora" in methods:
        rungs.append(Rung("qlora", 4, "freeze", quantize_vision=True))  # the leanest: the frozen tower in NF4 too
    if not rungs:
        raise ConfigError(f"--method: the VLM advisor chooses among {', '.join(VLM_METHODS)}; give one of them")
    return rungs


@dataclass(frozen=True)
class StageAdvice:
    """One recommended stage: its estimate, the plan-file record and why."""

    estimate: VlmEstimate
    plan: VlmStagePlan
    grad_accum: int
    epochs: int
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class VlmAdvice:
    """The two-stage plan, the table row it started from and what had to change to fit."""

    stages: tuple[StageAdvice, ...]
    row: ScaleRow
    requested_image_tokens: int  # per example at the user's --max-pixels
    reasons: tuple[str, ...]  # the table, the fit, the resolution: for both stages
    budget_bytes: int
    margin_ratio: float


@dataclass(frozen=True)
class _Search:
    spec: VlmSpec
    gpu: GpuSpec
    budget: float
    corrections: Corrections | None
    precision: str
    transformers_version: str | None = None  # `--transformers-version`: whose memory paths every candidate is modelled for

    def first_fit(self, run: RunConfig, vlm: VlmRun) -> VlmEstimate | None:
        """The fastest settings (checkpointing off, plain AdamW, a bigger micro-batch first) that fit."""
        for ckpt in (False, True):
            if run.offload_activations and not ckpt:
                continue  # offloading moves the checkpointed inputs: it needs checkpointing
            for optimizer in OPTIMIZERS:
                for batch in MICRO_BATCHES:
                    accum = max(1, math.ceil(EFFECTIVE_BATCH / batch))  # accumulated gradients stay live
                    est = estimate_vlm(self.spec, replace(run, grad_ckpt=ckpt, optimizer=optimizer, batch=batch, grad_accum=accum, transformers_version=self.transformers_version), vlm, self.gpu, self.corrections)
                    if est.breakdown.device_used_bytes <= self.budget:
                        return est
        return None


def _default_seq_len(spec: VlmSpec, vlm: VlmRun) -> int:
    tokens = image_plan(spec, RunConfig(seq_len=1 << 30), vlm).llm_tokens
    return math.ceil((tokens + TEXT_TOKENS) / 64) * 64


def pixel_levels(spec: VlmSpec, vlm: VlmRun) -> list[int | None]:
    """`--max-pixels` values to try: the user's, then fractions of the largest image's pixels that
    the processor honours (each one fewer image tokens); [user's] when it has no max_pixels."""
    base = image_plan(spec, RunConfig(seq_len=1 << 30), vlm)
    pixels = max(w * h for w, h in (t.resized for t in base.per_image)) if base.per_image else 0
    levels, seen = [vlm.max_pixels], {base.llm_tokens}
    for fraction in PIXEL_FRACTIONS:
        value = int(pixels * fraction)
        if value < 28 * 28:
            break
        tokens = image_plan(spec, RunConfig(seq_len=1 << 30), replace(vlm, max_pixels=value)).llm_tokens
        if tokens not in seen and tokens < base.llm_tokens:
            seen.add(tokens)
            levels.append(value)
    return levels


def recommend_vlm(spec: VlmSpec, gpu: GpuSpec, vlm: VlmRun, dataset_size: int | None = None, seq_len: int | None = None,
                  corrections: Corrections | None = None, margin_ratio: float = 0.05, methods: tuple[str, ...] = VLM_METHODS,
                  transformers_version: str | None = None) -> VlmAdvice:
    """Both stages of a VLM fine-tune that fit `gpu` with `margin_ratio` to spare.

    Args:
        spec: the VLM.
        gpu: one GPU.
        vlm: images per example, their sizes and the user's `--max-pixels` (stage and strategies are chosen here).
        dataset_size: `--dataset-size`, picks the table's row.
        seq_len: `--seq-len` fixed, else image tokens + 512 text tokens.
        methods: the LLM methods allowed (`--method`).
        transformers_version: `--transformers-version`, else the installed one.

    Raises:
        ConfigError: nothing fits even at the lowest resolution (the message says what would).
    """
    row = scale_row(dataset_size)
    rungs = ladder(row, methods)
    search = _Search(spec, gpu, gpu.total_bytes * (1 - margin_ratio), corrections, "bf16" if gpu.bf16 else "fp16", transformers_version)
    requested = image_plan(spec, RunConfig(seq_len=1 << 30), vlm).llm_tokens
    first_error = None
    levels = pixel_levels(spec, vlm)
    for level in levels:
        sized = replace(vlm, max_pixels=level)
        length = seq_len or _default_seq_len(spec, sized)
        try:
            image_plan(spec, RunConfig(seq_len=length), sized)
        except ConfigError as exc:  # the images alone overflow a fixed --seq-len: a lower resolution may fit
            first_error = first_error or exc
            continue
        savers: dict = {}
        for step in (None, *VLM_SAVER_STEPS):
            if step is not None:
                savers[step[0]] = step[1]
            found = _climb(search, rungs, sized, length, savers)
            if found is not None:
                return _advice(search, row, rungs, found, vlm, sized, requested, savers, seq_len is None, margin_ratio)
    if first_error is not None and len(levels) == 1:
        raise first_error
    raise ConfigError(_nothing_fits(search, rungs[-1], replace(vlm, max_pixels=levels[-1]), seq_len, margin_ratio))


def _climb(search: _Search, rungs: list[Rung], vlm: VlmRun, seq_len: int, savers: dict):
    """(rung, stage-2 estimate, stage-1 estimate) of the first rung whose both stages fit, or None."""
    for rung in rungs:
        run = RunConfig(method=rung.method, rank=rung.rank or 16, seq_len=seq_len, precision=search.precision, **savers)
        two = search.first_fit(run, replace(vlm, stage=2, vision=rung.vision, projector="train", quantize_vision=rung.quantize_vision))
        if two is None:
            continue
        # stage 1 loads the same base (4-bit for QLoRA) with the LLM and the tower frozen
        one = search.first_fit(run, replace(vlm, stage=1, vision="freeze", projector="train", quantize_vision=rung.quantize_vision))
        if one is not None:
            return rung, two, one
    return None


def _least(search: _Search, rung: Rung, seq_len: int, vlm: VlmRun) -> str:
    """What `rung`'s stage 2 needs at its leanest settings (micro-batch 1, checkpointing, paged 8-bit Adam)."""
    run = RunConfig(method=rung.method, rank=rung.rank or 16, seq_len=seq_len, precision=search.precision, batch=1,
                    grad_ckpt=True, optimizer="paged-adamw-8bit", grad_accum=EFFECTIVE_BATCH, transformers_version=search.transformers_version)
    try:
        est = estimate_vlm(search.spec, run, replace(vlm, stage=2, vision=rung.vision), search.gpu, search.corrections)
    except ConfigError:
        return ""
    return f": it needs {_gib(est.breakdown.device_used_bytes)} at micro-batch 1 with checkpointing and paged 8-bit Adam"


def _gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


def _advice(search, row, rungs, found, asked: VlmRun, sized: VlmRun, requested: int, savers: dict, seq_defaulted: bool, margin_ratio: float) -> VlmAdvice:
    rung, two, one = found
    gpu, spec = search.gpu, search.spec
    reasons = [row.reason]
    wanted = rungs[0]
    if rung != wanted:
        reasons.append(f"the table's choice ({wanted.title()}) does not fit one {gpu.name} with a {margin_ratio:.0%} margin "
                       f"({_gib(search.budget)}){_least(search, wanted, two.run.seq_len, sized)}: stepped down to {rung.title()}")
    plan = two.plan
    if seq_defaulted:
        reasons.append(f"seq-len {two.run.seq_len:,}: {plan.llm_tokens:,} image tokens + ~{TEXT_TOKENS} text tokens, rounded up to 64 (pass --seq-len to change)")
    if sized.max_pixels != asked.max_pixels:
        reasons.append(_resolution_cost(spec, asked, sized, requested, plan.llm_tokens))
    for field, value, _, what in VLM_SAVER_STEPS:
        if savers.get(field) == value:
            reasons.append(f"nothing fit without it: {what}")
    if not gpu.bf16:
        reasons.append(f"{gpu.name} has no bf16: fp16, watch for overflow (loss scaling, lower lr if the loss spikes)")
    lr, lr_reason = learning_rate(rung.method, spec.decoder)
    stage_two = _stage(two, lr, None, VISION_LR_SCALE, row.epochs, [
        f"stage 2: the projector and the LLM ({rung.title()}); {lr_reason}; the projector at the same lr"
        + (f", the vision tower at x{VISION_LR_SCALE:g} ({lr * VISION_LR_SCALE:.0e})" if rung.vision != "freeze" else ""),
    ])
    stage_one = _stage(one, STAGE1_LR, None, VISION_LR_SCALE, 1, [
        f"stage 1: projector warm-up, the LLM and the vision tower frozen, the projector at lr {STAGE1_LR:.0e} for 1 epoch "
        "(LLaVA's stage 1: the new projector learns to map image features before the LLM moves)",
    ])
    return VlmAdvice((stage_one, stage_two), row, requested, tuple(reasons), int(search.budget), margin_ratio)


def _stage(est: VlmEstimate, lr: float, projector_lr, vision_scale: float, epochs: int, reasons: list[str]) -> StageAdvice:
    run = est.run
    grad_accum = max(1, math.ceil(EFFECTIVE_BATCH / run.batch))
    reasons += [
        f"micro-batch {run.batch} x grad accumulation {grad_accum} = effective batch {run.batch * grad_accum}",
        "gradient checkpointing on: trades ~25% speed for activation memory" if run.grad_ckpt else "gradient checkpointing off: fits without it, ~25% faster",
    ]
    if run.optimizer != "adamw":
        reasons.append(f"{run.optimizer}: 8-bit Adam states, the only way this stage fits")
    plan = VlmStagePlan(stage=est.vlm.stage, run=run, vlm=est.vlm, learning_rate=lr, projector_lr=projector_lr, vision_lr_scale=vision_scale)
    return StageAdvice(est, plan, grad_accum, epochs, tuple(reasons))


def _resolution_cost(spec: VlmSpec, asked: VlmRun, sized: VlmRun, requested: int, tokens: int) -> str:
    """What a lower --max-pixels costs: the size each image is resized to, tokens and pixels lost."""
    before = image_plan(spec, RunConfig(seq_len=1 << 30), asked)
    after = image_plan(spec, RunConfig(seq_len=1 << 30), sized)
    old = sum(w * h for w, h in (t.resized for t in before.per_image))
    new = sum(w * h for w, h in (t.resized for t in after.per_image))
    sizes = ", ".join(dict.fromkeys(f"{a.resized[0]}x{a.resized[1]} -> {b.resized[0]}x{b.resized[1]}" for a, b in zip(before.per_image, after.per_image)))
    return (f"--max-pixels {sized.max_pixels:,}: nothing fit at the requested resolution, so images are resized {sizes}; "
            f"{tokens:,} image tokens per example instead of {requested:,}, {1 - new / old:.0%} of the pixels gone: "
            "fine detail (small text, thin lines, distant objects) is lost")


def _nothing_fits(search: _Search, lean: Rung, vlm: VlmRun, seq_len: int | None, margin_ratio: float) -> str:
    run = RunConfig(method=lean.method, rank=lean.rank or 4, seq_len=seq_len or _default_seq_len(search.spec, vlm), precision=search.precision,
                    grad_ckpt=True, optimizer="paged-adamw-8bit", batch=1, grad_accum=EFFECTIVE_BATCH, transformers_version=search.transformers_version,
                    **{field: value for field, value, _, _ in VLM_SAVER_STEPS})
    try:
        used = estimate_vlm(search.spec, run, replace(vlm, vision="freeze", quantize_vision=lean.quantize_vision), search.gpu, search.corrections).breakdown.device_used_bytes
        pixels = f" at --max-pixels {vlm.max_pixels:,}" if vlm.max_pixels else ""
        leanest = f"; the leanest stage 2 ({lean.title()}, micro-batch 1, checkpointing, paged 8-bit Adam){pixels} needs {_gib(used)}"
    except ConfigError:
        leanest = ""
    return (f"nothing fits {search.spec.name} on one {search.gpu.name} with a {margin_ratio:.0%} margin ({_gib(search.budget)}){leanest}: "
            "try a bigger GPU (--gpu), fewer or smaller images (--images, --image-size) or a shorter --seq-len")


__all__ = ["StageAdvice", "VlmAdvice", "ladder", "pixel_levels", "recommend_vlm", "scale_row"]
