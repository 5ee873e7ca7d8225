"""The bundled trainer for vision-language models: one stage (`train_vlm`) or both (`train_schedule`).

A `VlmSession` is the text trainer's session (loop.py: steps, checkpoints, --resume, OOM
fallback, run records) with the VLM's own model, data, optimizer groups and estimate:

* the model is `vlm_build.build_vlm` for the stage (the seeds' freezing, QLoRA on the LLM's
  decoder Linears only), from the directory's weights when it has them; stage 2 starts from a
  stage-1 output's projector (`init_from`);
* the data is image-text JSONL through the model's processor (vlm_data.py);
* the optimizer has one parameter group per component: projector (`projector_lr`, default the
  stage's lr), LLM adapter (the stage's lr), vision tower (the lr x `vision_lr_scale`);
* the estimate is `estimate_vlm` for the stage, with the images of the dataset's largest example
  (the measured steps are padded to --seq-len: the worst case); the run record keeps the
  `VlmRun` under ``run_config["vlm"]``, as the calibration rows do.

Stage outputs: ``OUT/projector`` (stage 1) or ``OUT/adapter`` (stage 2), see vlm_weights.py.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from unittest import mock

from vramplan.planner.errors import ConfigError
from vramplan.planner.specs import RunConfig
from vramplan.planner.vision import vlm_spec_from_config
from vramplan.planner.vision.run import VlmRun

from ..environment import environment
from ..store import Store
from . import checkpoint as ckpt
from . import vlm_data, vlm_weights
from .fallback import DoesNotFitError, format_bytes, next_config_down
from .loop import TrainConfig, TrainResult, _check_numbers, _Session, _stderr, train
from .model_dir import capacity_gpu, pick_device
from .model_path import check_model_path
from .record import run_record
from .vlm_processor import apply_max_pixels, load_processor, processor_max_pixels

# the seeds' stages: 1 warms up the projector (LLM and vision frozen), 2 adds LoRA r16 a32 on the LLM
STAGE_LR = {1: 1e-3, 2: 2e-4}
STAGE_DIRS = {1: "projector", 2: "adapter"}


@dataclass
class VlmTrainConfig(TrainConfig):
    vlm: VlmRun = field(default_factory=VlmRun)
    init_from: Path | str | None = None  # stage 2: a stage-1 output (its projector)
    projector_lr: float | None = None  # None: learning_rate
    vision_lr_scale: float = 0.1  # the vision tower's lr, when it trains: learning_rate x this


@dataclass
class VlmModelDir:
    """A VLM model directory: config.json, tokenizer, the family's processor, weights (or none)."""

    path: Path
    config: dict
    processor: object
    weights: list[Path]

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def pad_id(self) -> int:
        for value in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if value is not None:
                return int(value)
        return 0


def load_vlm_dir(path) -> VlmModelDir:
    from vramplan.planner.inventory import read_config

    path = check_model_path(path)
    config = read_config(path)
    return VlmModelDir(path, config, load_processor(path, config), sorted(path.glob("*.safetensors")))


def dataset_vlm(vlm: VlmRun, records, spec) -> VlmRun:
    """The stage's VlmRun with the images of the dataset's largest example (most image tokens)."""
    def tokens(record):
        return sum(spec.family.image_tokens(spec, w, h, vlm.max_pixels).llm for w, h in record.sizes)

    worst = max(records, key=tokens)
    return replace(vlm, images=len(worst.sizes), image_sizes=worst.sizes or vlm.image_sizes)


class VlmSession(_Session):
    """`loop._Session` with a VLM's model, data, optimizer groups, estimate and record."""

    def __init__(self, c: VlmTrainConfig):
        self.c, self.log = c, c.log or _stderr
        self.acc, self.main, self.fsdp = None, True, False
        _check_numbers(c)
        self._check_vlm_numbers()
        self.device = pick_device(c.device)
        self.model = load_vlm_dir(c.model_path)
        self.spec = vlm_spec_from_config(self.model.config, str(self.model.path.resolve()))
        self.run = replace(c.run, device_kind=self.device, grad_accum=c.grad_accum)  # accumulated grads outlive a micro-batch
        model_type = self.model.config["model_type"]
        if model_type not in vlm_data.PLACEHOLDERS:  # Mllama: its cross-attention inputs are not collated yet
            raise ConfigError(f"vramplan run does not train {model_type} models yet (estimate and calibrate do); it trains: {', '.join(vlm_data.PLACEHOLDERS)}")
        self.image_id = vlm_data._image_token_id(self.model.processor, vlm_data.PLACEHOLDERS[model_type])
        qwen = model_type in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")  # the families whose processor has a pixel cap
        if qwen and c.vlm.max_pixels:
            apply_max_pixels(self.model.processor, c.vlm.max_pixels)
        self.data = vlm_data.load_vlm_dataset(c.data_path, self.model.processor, model_type, self.run.seq_len, c.skip_bad_rows, c.eval_fraction, c.seed)
        vlm = replace(c.vlm, max_pixels=processor_max_pixels(self.model.processor) if qwen else c.vlm.max_pixels)
        self.vlm = dataset_vlm(vlm, self.data.records, self.spec)
        if self.vlm.trains_llm and c.init_from is None and self.vlm.trains_projector:
            self.log("note: stage 2 without --init-from: the projector starts from the model directory's weights (give a stage-1 output, or use --schedule two-stage)")
        self.gpu = capacity_gpu(c.gpu, self.device)
        self.run, self.grad_accum, self.notes = self._check_fits(self.run, c.grad_accum)
        self.out = Path(c.out_dir)
        self.marker = ckpt.claim_out_dir(self.out, c.resume) or {}
        if self.marker:
            self._check_resume()
        self.env = environment(self.device)
        self.record_ids = list(self.marker.get("record_ids", []))
        self.fallbacks = []
        self._announce()

    def _check_vlm_numbers(self) -> None:
        c, problems = self.c, []
        if c.projector_lr is not None and not c.projector_lr > 0:
            problems.append(f"--projector-lr must be greater than 0, got {c.projector_lr!r}")
        if not c.vision_lr_scale > 0:
            problems.append(f"--vision-lr-scale must be greater than 0, got {c.vision_lr_scale!r}")
        if c.merge:
            problems.append("--merge: a VLM stage saves its projector and adapter (OUT/adapter); merging is not offered for VLMs yet")
        if problems:
            raise ConfigError("; ".join(problems))

    def _check_fits(self, run: RunConfig, accum: int):
        """`fallback.check_fits` against the VLM estimate (nothing to check on CPU)."""
        notes = []
        while self.gpu is not None and (needed := self._estimate(run).breakdown.device_used_bytes) > self.gpu.total_bytes:
            what = f"estimated {format_bytes(needed)} does not fit {self.gpu.name}"
            down = next_config_down(run, accum)
            if self.c.force:
                return run, accum, [*notes, f"{what}: starting anyway (--force)"]
            if down is None or not self.c.auto_fallback:
                hint = f"try {down[2]}, or pass --auto-fallback" if down else "use qlora, a smaller --max-pixels or a larger GPU"
                raise DoesNotFitError(f"{what}; {hint} (or --force to start anyway)")
            run, accum, reason = down
            notes.append(f"{what}: stepping down to {reason}")
        return run, accum, notes

    def _check_resume(self) -> None:
        super()._check_resume()
        stage = (self.marker.get("vlm") or {}).get("stage")
        if stage is not None and stage != self.vlm.stage:
            raise ConfigError(f"--resume {self.out}: that folder holds a stage-{stage} run, not stage {self.vlm.stage}; give that stage's folder")

    def _mark(self, status: str, run: RunConfig, accum: int, step: int, **extra) -> None:
        super()._mark(status, run, accum, step, vlm=self.vlm.as_dict(), **extra)

    # ------------------------------------------------------------ the hooks of loop._Session
    def _build_model(self, run: RunConfig):
        import transformers

        from ..vlm_build import build_vlm

        cls = getattr(transformers, self.spec.family.torch_class)
        source = str(self.model.path)

        def from_weights(config, **kwargs):  # build_vlm's one construction call, from the directory's weights
            return cls.from_pretrained(source, config=config, local_files_only=True, **kwargs)

        patch = mock.patch.object(cls, "_from_config", from_weights) if self.model.weights else contextlib.nullcontext()
        with patch, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_vlm(self.model.config, run, self.vlm, device=self.device)
        if self.c.init_from is not None:
            source = stage_weights_dir(Path(self.c.init_from), 1)
            loaded = vlm_weights.load_components(model, source)
            self.log(f"initialised {len(loaded)} tensors from {source}")
        model.vramplan_adapter = vlm_weights.__name__  # checkpoints save and load through vlm_weights
        return model

    def _make_optimizer(self, run: RunConfig, model):
        from ..cpu_probe import make_optimizer
        from ..vlm_build import component_of

        lr = self.c.learning_rate
        rates = {"projector": self.c.projector_lr or lr, "llm": lr, "vision": lr * self.c.vision_lr_scale}
        groups: dict[str, list] = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                groups.setdefault(component_of(name, self.spec.model_type), []).append(p)
        optimizer = make_optimizer(run, [{"params": ps, "lr": rates[part], "component": part} for part, ps in groups.items()])
        for group in optimizer.param_groups:  # make_optimizer's default lr must not win over the group's
            group["lr"] = rates[group["component"]]
        return optimizer

    def _batches(self, run: RunConfig, position: int):
        return vlm_data.VlmBatches(self.train, run.batch, self.model.processor, self.model.pad_id, self.c.seed, position)

    def _eval_batches(self, run: RunConfig):
        return vlm_data.eval_batches(self.eval, run.batch, self.model.processor, self.model.pad_id)

    def _truncate(self, examples: list, run: RunConfig) -> list:
        return vlm_data.truncate(examples, run.seq_len, self.image_id)

    def _estimate(self, run: RunConfig):
        from vramplan.planner.vlm_estimate import estimate_vlm

        return estimate_vlm(self.spec, run, self.vlm, self.gpu)

    def _save_final(self, model) -> Path:
        target = self.out / STAGE_DIRS[self.vlm.stage]
        vlm_weights.save(model, target, base_path=str(self.model.path.resolve()))
        self.model.tokenizer.save_pretrained(target)
        self.model.processor.image_processor.save_pretrained(target)
        return target

    def _record(self, outcome, run, accum, est, measured, state, error=None, started=0.0, extra=None) -> None:
        if not self.c.record:
            return
        lrs = {"learning_rate": self.c.learning_rate, "projector_lr": self.c.projector_lr, "vision_lr_scale": self.c.vision_lr_scale}
        trainer = {
            "out_dir": str(self.out.resolve()), "grad_accum": accum, "learning_rate": self.c.learning_rate, "lr": lrs,
            "random_init": not self.model.weights, "train_rows": len(self.data.train), "fallbacks": self.fallbacks,
            "init_from": str(self.c.init_from) if self.c.init_from else None, **(extra or {}),
        }
        record = run_record(self.device, outcome, error, str(self.model.path.resolve()), self.model.config, run, self.env, est, measured,
                            state, trainer, self.c.command, time.perf_counter() - started)
        record = replace(record, run_config={**asdict(run), "vlm": self.vlm.as_dict()},
                         estimate={**record.estimate, "components": _components(est)})
        with Store.open(self.c.db) as store:
            self.record_ids.append(store.add_run(record))


def _components(est) -> dict:
    return {part: {"trainable_params": value["trainable_params"], "total_bytes": value["total_bytes"]} for part, value in est.components().items()}


def stage_weights_dir(path: Path, stage: int) -> Path:
    """A stage's weights folder from what the user gave: the folder itself, or the run's --out.

    Raises:
        ConfigError: neither holds the stage's components.
    """
    for candidate in (path, path / STAGE_DIRS[stage], path / f"stage-{stage}" / STAGE_DIRS[stage]):
        if (candidate / vlm_weights.COMPONENTS_FILE).is_file():
            return candidate
    raise ConfigError(f"--init-from {path}: no stage-{stage} output there (looked for {vlm_weights.COMPONENTS_FILE} in it, "
                      f"{STAGE_DIRS[stage]}/ and stage-{stage}/{STAGE_DIRS[stage]}/); run --stage {stage} first")


def train_vlm(config: VlmTrainConfig) -> TrainResult:
    """One stage: `loop.train` with a VlmSession (checkpoints, --resume, OOM fallback, record)."""
    return train(config, session_class=VlmSession)


def stage_config(base: VlmTrainConfig, stage: int, lr_given: bool) -> VlmTrainConfig:
    """The schedule's config for one stage: its folder, its lr, stage 2 from stage 1's projector."""
    out = Path(base.out_dir) / f"stage-{stage}"
    lr = base.learning_rate if lr_given and stage == 2 else STAGE_LR[stage]
    init = out.parent / "stage-1" if stage == 2 else None
    return replace(base, out_dir=out, vlm=replace(base.vlm, stage=stage), learning_rate=lr, init_from=init)


def train_schedule(base: VlmTrainConfig, lr_given: bool = False) -> list[TrainResult]:
    """--schedule two-stage: stage 1 into OUT/stage-1, then stage 2 from its projector into OUT/stage-2.

    With ``resume``, a finished stage is not trained again.
    """
    results = []
    for stage in (1, 2):
        config = stage_config(base, stage, lr_given)
        marker = ckpt.read_marker(Path(config.out_dir)) if base.resume else None
        if marker and marker.get("status") == "finished":
            (base.log or _stderr)(f"stage {stage}: already finished in {config.out_dir}")
            continue
        (base.log or _stderr)(f"stage {stage}: {'projector only' if stage == 1 else 'projector + ' + base.run.method + ' on the LLM'}, lr {config.learning_rate:g}")
        results.append(train_vlm(replace(config, resume=marker is not None)))  # a stage not begun yet starts fresh
    return results
