"""The bundled trainer: ``train(TrainConfig) -> TrainResult``.

A plain loop over the model `build_model` makes (the one the planner measures): micro-batches
with gradient accumulation (the loss weighted by target tokens, so accumulation does not change
it), AdamW (or the run's optimizer, `make_optimizer`) on a cosine schedule with warmup, autocast
for the ``*-mixed`` precisions, gradient clipping at 1.0. Before it starts, the estimate is
checked against the device; after it ends (or fails, or is interrupted) the run is recorded in the
measurement store beside that estimate.
"""

from __future__ import annotations

import gc
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from vramplan.planner.errors import ConfigError, ResourceError, TrainingFailed, VramplanError
from vramplan.planner.estimator import estimate
from vramplan.planner.inventory import spec_from_path
from vramplan.planner.specs import GpuSpec, RunConfig

from ..adapters import module_of
from ..cpu_probe import autocast_context, make_optimizer
from ..environment import environment
from ..runner import is_oom
from ..store import Store
from . import checkpoint as ckpt
from .chunked_loss import training_loss
from .marker import owner
from .data import IGNORE, Batches, eval_batches, load_dataset, steps_per_epoch, truncate_examples
from .fallback import check_fits, next_config_down
from .meter import make_meter, progress_bar
from .packing import PackedBatches
from .model_dir import build_training_model, capacity_gpu, load_model_dir, merge_adapter, pick_device
from .record import rate as _rate
from .record import run_record

__all__ = ["TrainConfig", "TrainResult", "train", "next_config_down", "TrainingInterrupted", "TrainingOutOfMemory"]

# settings a resumed run must share with the checkpoint (the adapter's shape, the optimizer state)
RESUME_MUST_MATCH = ("method", "rank", "alpha", "targets", "optimizer", "precision", "adapter_dtype", "double_quant", "method_options")


class TrainingInterrupted(VramplanError):
    """Ctrl-C: a checkpoint was saved (when there was progress) and the run recorded."""

    exit_code = 130
    kind = "interrupted"


class TrainingOutOfMemory(ResourceError):
    """The device ran out of memory; the message proposes the next config down."""


class _OutOfMemory(Exception):
    """Internal: one attempt ran out of memory (recorded); `train` decides whether to retry."""


@dataclass
class TrainConfig:
    model_path: Path | str
    data_path: Path | str
    out_dir: Path | str
    run: RunConfig = field(default_factory=lambda: RunConfig(method="lora"))
    grad_accum: int = 1
    learning_rate: float = 2e-4
    epochs: float = 1.0
    max_steps: int | None = None  # optimizer steps; overrides epochs
    warmup_ratio: float = 0.03
    use_rslora: bool = False  # adapter scale alpha / sqrt(r) (what the advisor picks from rank 64)
    max_grad_norm: float = 1.0
    save_every: int = 100  # optimizer steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = 2
    eval_fraction: float = 0.05
    seed: int = 0
    device: str | None = None  # None: cuda when available
    gpu: GpuSpec | None = None  # what the CUDA device is (its real memory is used as capacity)
    db: Path | str | None = None  # measurement store; None: the default one
    record: bool = True
    resume: bool = False
    force: bool = False
    auto_fallback: bool = False
    skip_bad_rows: bool = False
    merge: bool = False
    progress: bool = True
    cpu_tracked_steps: int = 2  # CPU: steps measured with LiveTensorTracker (slow)
    command: str | None = None
    log: Callable[[str], None] | None = None
    step_callback: Callable[[int, float], None] | None = None  # (step, loss) after each optimizer step
    accelerator: object | None = None  # an accelerate.Accelerator: this is one rank of `run --gpus N` (distributed.py)


@dataclass
class TrainResult:
    out_dir: Path
    run: RunConfig
    grad_accum: int
    start_step: int
    steps: int
    total_steps: int
    losses: list[float]  # per optimizer step, this session and the resumed ones
    eval_loss: float | None
    tokens_per_s: float
    peak_bytes: int | None
    peak_statistic: str | None
    weights_dir: Path
    merged_dir: Path | None
    record_ids: list[int]
    notes: list[str]
    random_init: bool
    per_rank_peak_bytes: list[int] | None = None  # --gpus N: every rank's peak, rank 0 first


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _check_numbers(c: TrainConfig) -> None:
    problems = []
    if not isinstance(c.grad_accum, int) or c.grad_accum < 1:
        problems.append(f"--grad-accum must be a whole number of at least 1, got {c.grad_accum!r}")
    if not c.learning_rate > 0:
        problems.append(f"--lr must be greater than 0, got {c.learning_rate!r}")
    if not c.epochs > 0:
        problems.append(f"--epochs must be greater than 0, got {c.epochs!r}")
    if c.max_steps is not None and c.max_steps < 1:
        problems.append(f"--max-steps must be at least 1, got {c.max_steps!r}")
    if c.save_every < 1:
        problems.append(f"--save-every must be at least 1, got {c.save_every!r}")
    if not 0 <= c.eval_fraction < 0.5 or not 0 <= c.warmup_ratio < 1:
        problems.append("eval_fraction must be in [0, 0.5) and warmup_ratio in [0, 1)")
    if problems:
        raise ConfigError("; ".join(problems))


def _plain(run: RunConfig) -> dict:
    """The run as its JSON marker holds it (tuples become lists, nested ones too)."""
    return json.loads(json.dumps(asdict(run)))


class _Session:
    """Everything one `train` call checks up front, and one attempt per config it tries."""

    def __init__(self, c: TrainConfig):
        self.c, self.log = c, c.log or _stderr
        self.acc = c.accelerator  # None: one process, as always
        self.main = self.acc is None or self.acc.is_main_process  # only it writes the marker, checkpoints, weights, record
        self.fsdp = self.acc is not None and self.acc.distributed_type.name == "FSDP"  # sharded: no checkpoints yet
        _check_numbers(c)
        self.device = pick_device(c.device)
        self.model = load_model_dir(c.model_path)
        self.spec, _ = spec_from_path(self.model.path)
        self.run = replace(c.run, device_kind=self.device, grad_accum=c.grad_accum)  # accumulated grads outlive a micro-batch
        self.data = load_dataset(c.data_path, self.model.tokenizer, self.run.seq_len, c.skip_bad_rows, c.eval_fraction, c.seed)
        if c.merge and not self.model.weights:
            raise ConfigError(f"--merge: {self.model.path} has no *.safetensors weights to merge the adapter into")
        self.gpu = capacity_gpu(c.gpu, self.device)
        self.run, self.grad_accum, self.notes = check_fits(self.spec, self.run, c.grad_accum, self.gpu, c.force, c.auto_fallback)
        self.out = Path(c.out_dir)
        if self.acc is None:
            self.marker = ckpt.claim_out_dir(self.out, c.resume) or {}
        else:  # the launcher wrote its files into OUT; the other ranks leave OUT to rank 0
            from .distributed import LAUNCH_FILES

            self.marker = (ckpt.claim_out_dir(self.out, c.resume, LAUNCH_FILES) if self.main else None) or {}
        if self.marker:
            self._check_resume()
        self.env = environment(self.device)
        self.record_ids: list[int] = list(self.marker.get("record_ids", []))
        self.fallbacks: list[str] = []
        self._announce()

    def _announce(self) -> None:
        d = self.data
        if not self.model.weights:
            self.notes.append(f"{self.model.path} has no *.safetensors: training from random weights (config.json only)")
        self.notes += [f"{d.skipped} malformed rows skipped (first: {d.skip_messages[0]})"] if d.skipped else []
        self.notes += [f"{d.truncated} rows cut at --seq-len {self.run.seq_len}"] if d.truncated else []
        self.notes += [f"{d.no_target} rows dropped: nothing to learn within --seq-len"] if d.no_target else []
        self.notes += ["--strategy fsdp: no checkpoints during the run yet (only the final weights are saved)"] if self.fsdp else []
        for note in self.notes:
            self.log(f"note: {note}")
        self.log(f"data: {len(d.train)} training rows, {len(d.eval)} eval rows ({'chat template' if d.chat_template else 'plain format'}); device {self.device}")

    def _check_resume(self) -> None:
        old, new = self.marker.get("run", {}), _plain(self.run)
        diffs = [f"{k} {new[k]!r} (the run has {old.get(k)!r})" for k in RESUME_MUST_MATCH if old.get(k) != new[k]]
        for key, value in (("model", str(self.model.path.resolve())), ("data", str(Path(self.c.data_path).resolve())), ("seed", self.c.seed)):
            if self.marker.get(key) != value:
                diffs.append(f"{key} {value!r} (the run has {self.marker.get(key)!r})")
        if diffs:
            raise ConfigError(f"--resume {self.out}: not the same run: {'; '.join(diffs)}; resume with its settings or use another --out")

    # ------------------------------------------------------------ bookkeeping
    def _mark(self, status: str, run: RunConfig, accum: int, step: int, **extra) -> None:
        if not self.main:
            return
        self.marker.update(
            status=status, step=step, run=_plain(run), grad_accum=accum, learning_rate=self.c.learning_rate,
            model=str(self.model.path.resolve()), data=str(Path(self.c.data_path).resolve()), seed=self.c.seed,
            record_ids=self.record_ids, fallbacks=self.fallbacks, **owner(), **extra,
        )
        ckpt.write_marker(self.out, self.marker)

    def _record(self, outcome, run, accum, est, measured, state, error=None, started=0.0, extra=None) -> None:
        if not self.c.record or not self.main:
            return
        trainer = {
            "out_dir": str(self.out.resolve()), "grad_accum": accum, "learning_rate": self.c.learning_rate,
            "random_init": not self.model.weights, "train_rows": len(self.data.train), "fallbacks": self.fallbacks, **(extra or {}),
        }
        record = run_record(
            self.device, outcome, error, str(self.model.path.resolve()), self.model.config, run, self.env, est, measured, state,
            trainer, self.c.command, time.perf_counter() - started,
        )
        with Store.open(self.c.db) as store:
            self.record_ids.append(store.add_run(record))

    # ------------------------------------------------------------ one attempt
    def _setup(self, run: RunConfig, total: int):
        torch.manual_seed(self.c.seed)  # same random base and adapter init on every resume
        # a 4-bit model of an earlier attempt or stage outlives `del` (bitsandbytes' Params4bit and
        # Linear4bit point at each other) until the cyclic GC: collect it before building this one
        self._free_memory()
        model = self._build_model(run)
        for note in getattr(model, "vramplan_notes", []):
            self.log(f"note: {note}")
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = self._make_optimizer(run, model)
        from transformers import get_cosine_schedule_with_warmup

        scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(total * self.c.warmup_ratio), total)
        # fp16 gradients underflow without loss scaling; the scaler needs fp32 trainable parameters
        fp16 = self.device == "cuda" and run.precision.startswith("fp16") and all(p.dtype == torch.float32 for p in trainable)
        scaler = torch.amp.GradScaler("cuda") if fp16 else None
        self.wrapped = model  # what the forward pass runs through: DDP / FSDP under --gpus N
        if self.acc is not None:
            self.wrapped, optimizer = self.acc.prepare(model, optimizer)
        return model, optimizer, scheduler, scaler

    # hooks a VLM session (vlm_loop.py) replaces: the model, the optimizer, the data, the estimate
    def _build_model(self, run: RunConfig):
        return build_training_model(self.model, run, self.device, self.c.use_rslora)

    def _make_optimizer(self, run: RunConfig, model):
        optimizer = make_optimizer(run, [p for p in model.parameters() if p.requires_grad])
        for group in optimizer.param_groups:
            group["lr"] = self.c.learning_rate
        return optimizer

    def _batches(self, run: RunConfig, position: int):
        if run.packing:
            return PackedBatches(self.train, run.batch, self.model.pad_id, self.c.seed, run.seq_len, position=position)
        return Batches(self.train, run.batch, self.model.pad_id, self.c.seed, position=position)

    def _eval_batches(self, run: RunConfig):
        return eval_batches(self.eval, run.batch, self.model.pad_id)

    def _truncate(self, examples: list, run: RunConfig) -> list:
        return truncate_examples(examples, run.seq_len)

    def _estimate(self, run: RunConfig):
        return estimate(self.spec, run, self.gpu)

    def _restore(self, model, optimizer, scheduler, scaler, state: dict) -> dict:
        found = ckpt.checkpoint_dirs(self.out)
        if not found:
            if self.c.resume:
                self.log("note: no checkpoint yet: starting from step 0")
            return state
        loaded = ckpt.load_checkpoint(found[-1], model, optimizer, scheduler)
        if scaler is not None and "scaler" in loaded:
            scaler.load_state_dict(loaded["scaler"])
        self.log(f"resumed from {found[-1]} (step {loaded['step']})")
        return {**state, **{k: loaded[k] for k in state if k in loaded}, "start_step": loaded["step"]}

    def _checkpoint(self, model, optimizer, scheduler, scaler, state, run, accum) -> Path:
        extra = {"scaler": scaler.state_dict()} if scaler is not None else {}
        if not self.main or self.fsdp:
            return self.out / "checkpoints"
        path = ckpt.save_checkpoint(self.out, model, optimizer, scheduler, {**state, **extra}, self.c.keep_checkpoints)
        self._mark("running", run, accum, state["step"])
        return path

    def _step(self, model, optimizer, scheduler, scaler, batches, run, accum, meter) -> tuple[float, int]:
        """One optimizer step over ``accum`` micro-batches; returns (loss, tokens)."""
        # measured steps are padded to seq_len: their peak is the worst case, the one estimated
        width = run.seq_len if meter.measuring else None
        with meter.phase("inputs"):
            micro = [batches.next(width) for _ in range(accum)]
        targets = [int((m["labels"][:, 1:] != IGNORE).sum()) for m in micro]
        loss_value, tokens = 0.0, 0
        for batch, count in zip(micro, targets):
            tokens += int(batch.pop("attention_mask").sum())  # right padding: see data.collate
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with meter.phase("forward"), autocast_context(run, self.device):
                loss = training_loss(self.wrapped, run, **batch) * (count / sum(targets))  # token-weighted over the whole step
            with meter.phase("backward"):
                scaled = scaler.scale(loss) if scaler else loss
                scaled.backward() if self.acc is None else self.acc.backward(scaled)
            loss_value += float(loss.detach())
            del loss, batch
        with meter.phase("optimizer"):
            if scaler is not None:
                scaler.unscale_(optimizer)
            if self.c.max_grad_norm and self.acc is not None:  # the norm over every rank's shard (FSDP)
                self.acc.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], self.c.max_grad_norm)
            elif self.c.max_grad_norm:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], self.c.max_grad_norm)
            scaler.step(optimizer) if scaler is not None else optimizer.step()
            if scaler is not None:
                scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        return loss_value, tokens

    def _loop(self, model, optimizer, scheduler, scaler, run, accum, state, total, meter) -> None:
        batches = self._batches(run, state["examples_seen"])
        with progress_bar(self.c.progress) as bar:
            task = bar.add_task(f"{run.method} b{run.batch}x{accum}", total=total, completed=state["step"], stats="")
            while state["step"] < total:
                measured, started = meter.measuring, time.perf_counter()
                with meter.step(model, optimizer):
                    loss, tokens = self._step(model, optimizer, scheduler, scaler, batches, run, accum, meter)
                seconds = time.perf_counter() - started
                state["step"] += 1
                state["examples_seen"] = batches.position
                state["losses"].append(loss)
                key = "measured" if measured else "timed"  # measured steps are padded (and, on CPU, tracked): slower
                state[f"{key}_tokens"] += tokens
                state[f"{key}_seconds"] += seconds
                stats = f"loss {loss:.4f} | {_rate(state):,.0f} tok/s | {meter.text()}"
                bar.update(task, completed=state["step"], stats=stats)
                if self.c.step_callback is not None:
                    self.c.step_callback(state["step"], loss)
                if state["step"] % self.c.save_every == 0 and state["step"] < total:
                    self._checkpoint(model, optimizer, scheduler, scaler, state, run, accum)

    @torch.no_grad()
    def _evaluate(self, model, run) -> float | None:
        total, count = 0.0, 0
        model.eval()
        for batch in self._eval_batches(run):
            n = int((batch["labels"][:, 1:] != IGNORE).sum())
            batch = {k: v.to(self.device) for k, v in batch.items() if k != "attention_mask"}
            with autocast_context(run, self.device):
                total += float(self.wrapped(**batch).loss) * n
            count += n
        model.train()
        return total / count if count else None

    def _save_final(self, model) -> Path:
        state = None
        if self.acc is not None:  # the whole model (FSDP gathers its shards: every rank takes part)
            state = self.acc.get_state_dict(self.wrapped) if self.fsdp else None
            if not self.main:
                return self.out / ("adapter" if ckpt.has_adapter(model) else "model")
        adapter = module_of(model)
        if adapter is not None:
            target = self.out / "adapter"
            adapter.save(model, target, base_path=str(self.model.path.resolve()), state_dict=state)
        else:
            target = self.out / "model"
            model.save_pretrained(target, **({"state_dict": state} if state is not None else {}))
        self.model.tokenizer.save_pretrained(target)
        return target

    def attempt(self, run: RunConfig, accum: int) -> TrainResult:
        self.train = self._truncate(self.data.train, run)
        self.eval = self._truncate(self.data.eval, run)
        ranks = 1 if self.acc is None else self.acc.num_processes
        total = self.c.max_steps or max(1, math.ceil(self.c.epochs * steps_per_epoch(len(self.train), run.batch * ranks, accum)))
        if self.acc is not None:  # each rank trains its own shard of the rows (the same step count on every rank)
            self.train = self.train[self.acc.process_index :: ranks]
        est = self._estimate(run)
        meter = make_meter(self.device, self.c.cpu_tracked_steps)
        state = {"step": 0, "examples_seen": 0, "losses": [], "timed_tokens": 0, "timed_seconds": 0.0, "measured_tokens": 0, "measured_seconds": 0.0}
        started, parts, oom = time.perf_counter(), None, None
        try:
            parts = self._setup(run, total)  # (model, optimizer, scheduler, scaler)
            state = self._restore(*parts, state)
            self._mark("running", run, accum, state["step"], total_steps=total)
            self._loop(*parts, run, accum, state, total, meter)
            eval_loss = self._evaluate(parts[0], run)
            saved = ckpt.checkpoint_dirs(self.out)
            if not saved or saved[-1].name != f"step-{state['step']:06d}":
                self._checkpoint(*parts, state, run, accum)  # lets a later --resume go further
            weights = self._save_final(parts[0])
        except KeyboardInterrupt:
            self._interrupted(parts, state, run, accum, total, est, meter, started)
        except Exception as exc:
            if not is_oom(exc):
                self._failed(exc, run, accum, est, meter, state, total, started)
            oom = f"{type(exc).__name__}: {exc}"[:2000]
        if oom is not None:  # outside the except block: the traceback no longer pins the tensors
            parts = None
            self._free_memory()
            self._record("oom", run, accum, est, meter.results(), state, oom, started)
            self._mark("oom", run, accum, state["step"], message=oom[:500])
            raise _OutOfMemory(oom)
        parts = None  # frees the training model before a merge loads another copy
        return self._finish(run, accum, state, total, est, meter, eval_loss, weights, started)

    def _failed(self, exc, run, accum, est, meter, state, total, started):
        """Mark the folder first (it must never stay `running`), then record; raise what the user reads."""
        self._mark("error", run, accum, state["step"], total_steps=total, message=f"{type(exc).__name__}: {exc}"[:500])
        recorded = "recorded as error in the store"
        try:
            self._record("error", run, accum, est, meter.results(), state, f"{type(exc).__name__}: {exc}"[:2000], started)
        except VramplanError as store_exc:
            recorded = f"not recorded ({store_exc})"
        if isinstance(exc, (VramplanError, OSError)):
            raise exc
        import traceback

        log = self.out / "traceback.txt"
        try:
            log.write_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), encoding="utf-8")
            saved = f"the traceback is in {log}"
        except OSError:
            saved = "the traceback could not be saved"
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise TrainingFailed(
            f"training failed at step {state['step'] + 1} of {total} ({type(exc).__name__}: {first}); {recorded}, {self.out} marked "
            f"error, {saved}; fix the cause and continue with --resume --out {self.out}"
        ) from None

    def _interrupted(self, parts, state, run, accum, total, est, meter, started):
        where = "before the first step"
        if parts is not None and state["step"] > state.get("start_step", 0):
            path = self._checkpoint(*parts, state, run, accum)
            where = f"at step {state['step']} of {total}; checkpoint saved in {path}"
        elif state["step"]:
            where = f"at step {state['step']} of {total}; the checkpoint of that step is in {self.out / 'checkpoints'}"
        self._record("error", run, accum, est, meter.results(), state, "interrupted", started)
        self._mark("interrupted", run, accum, state["step"], total_steps=total)
        raise TrainingInterrupted(f"interrupted {where}: continue with --resume --out {self.out}") from None

    def _free_memory(self) -> None:
        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def _finish(self, run, accum, state, total, est, meter, eval_loss, weights, started) -> TrainResult:
        measured = meter.results()
        extra = {"eval_loss": eval_loss, "total_steps": total, "weights_dir": str(weights)}
        per_rank = None
        if self.acc is not None:
            from accelerate.utils import gather_object

            per_rank = [int(p or 0) for p in gather_object([measured.get("peak_allocated_bytes")])]
            rates = gather_object([_rate(state)])
            extra.update(per_rank_peak_bytes=per_rank, per_rank_tokens_per_s=rates, processes=self.acc.num_processes,
                         distributed_type=self.acc.distributed_type.name)
        try:
            self._record("ok", run, accum, est, measured, state, None, started, extra)
            self._free_memory()
            merged = merge_adapter(self.model, run, weights, self.out / "merged") if self.c.merge and weights.name == "adapter" and self.main else None
        except BaseException as exc:  # trained and saved: the folder says so, whatever failed after
            self._mark("error", run, accum, state["step"], total_steps=total, message=f"after training, {type(exc).__name__}: {exc}"[:500])
            raise
        if self.c.merge and weights.name != "adapter":
            self.log("note: --merge: full fine-tuning already saves the whole model")
        self._mark("finished", run, accum, state["step"], total_steps=total)
        return TrainResult(
            out_dir=self.out, run=run, grad_accum=accum, start_step=state.get("start_step", 0), steps=state["step"],
            total_steps=total, losses=state["losses"], eval_loss=eval_loss, tokens_per_s=_rate(state),
            peak_bytes=measured.get("peak_allocated_bytes"), peak_statistic=measured.get("statistic"), weights_dir=weights,
            merged_dir=merged, record_ids=list(self.record_ids), notes=self.notes + self.fallbacks, random_init=not self.model.weights,
            per_rank_peak_bytes=per_rank,
        )


def _oom_message(run: RunConfig, accum: int, step: int, error: str) -> str:
    down = next_config_down(run, accum)
    where = f"out of memory at step {step + 1} ({error.splitlines()[0][:200]})"
    if down is None:
        return f"{where}; nothing smaller is left to try: use qlora, a smaller model or a larger GPU"
    return f"{where}; try {down[2]}, or pass --auto-fallback to step down automatically"


def train(config: TrainConfig, session_class=None) -> TrainResult:
    """Train, checkpoint, save and record one run (see the module doc).

    Raises:
        ConfigError, DataError: bad settings, model directory, data or output directory.
        DoesNotFitError: the estimate exceeds the GPU (unless ``force`` / ``auto_fallback``).
        TrainingInterrupted: Ctrl-C; a checkpoint was saved and the run recorded.
        TrainingOutOfMemory: the device ran out of memory (after any ``auto_fallback`` retries).
    """
    session = (session_class or _Session)(config)  # vlm_loop.VlmSession for a vision-language model
    run, accum = session.run, session.grad_accum
    while True:
        try:
            return session.attempt(run, accum)
        except _OutOfMemory as exc:
            error = str(exc)
        step = session.marker.get("step", 0)
        down = next_config_down(run, accum)
        if not config.auto_fallback or down is None:
            raise TrainingOutOfMemory(_oom_message(run, accum, step, error))
        run, accum, reason = down
        session.fallbacks.append(f"out of memory: retried with {reason}")
        session.log(f"out of memory: retrying with {reason}")
