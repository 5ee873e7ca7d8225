"""The Python API, for notebooks: `estimate` one run, `recommend` the best ones.

>>> from vramplan import estimate, recommend
>>> result = estimate("8b", gpu="t4", method="qlora")
>>> result  # doctest: +ELLIPSIS
QLoRA on meta-llama/Llama-3.1-8B, batch 1 x 2048: ... GiB peak allocated, ... GiB device used; fits NVIDIA Tesla T4 (... GiB to spare)
>>> result.fits, result.max_batch >= 1, result.peak_phase
(True, True, 'forward')
>>> sorted(result.components)[:3]
['activations/checkpoint_inputs', 'activations/final_norm', 'activations/inputs']
>>> estimate("8b", gpu="t4", method="lora").fits
False
>>> estimate("8b", gpu="t4", method="lora", batch=2, seq_len=512, targets="attention").config["targets"]
['q_proj', 'k_proj', 'v_proj', 'o_proj']
>>> best = recommend("8b", gpu="t4", dataset_size=5000)[0]
>>> best.config["method"], best.config["target_preset"], best.fits
('qlora', 'all-linear', True)

Another tool's config is a starting point (`from_config=`), and settings given win:

>>> estimate(from_config="tests/data/interop/axolotl-llama3-qlora.yml", gpu="a100-80gb", batch=1).config["batch"]
1
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

GIB = 1 << 30


@dataclass(frozen=True)
class EstimateResult:
    """One run's estimate: peaks in bytes, whether it fits, the terms, and the settings it used."""

    model: str
    method: str
    title: str
    peak_allocated_bytes: int  # predicts torch.cuda.max_memory_allocated
    peak_reserved_bytes: int  # predicts torch.cuda.max_memory_reserved
    device_used_bytes: int  # predicts nvidia-smi (CUDA context included)
    peak_phase: str
    fits: bool | None  # None without a GPU
    headroom_bytes: int | None
    gpu: str | None
    max_batch: int | None
    max_seq_len: int | None
    components: dict  # term -> bytes live at the peak
    config: dict  # the settings, as `estimate --json` writes them
    document: dict = field(repr=False)  # the full `estimate --json` entry
    imported: dict | None = field(default=None, repr=False)  # with from_config: what came from where

    @property
    def peak_allocated_gib(self) -> float:
        return self.peak_allocated_bytes / GIB

    @property
    def device_used_gib(self) -> float:
        return self.device_used_bytes / GIB

    def __repr__(self) -> str:
        fit = ""
        if self.fits is not None:
            spare = abs(self.headroom_bytes) / GIB
            fit = f"; fits {self.gpu} ({spare:.2f} GiB to spare)" if self.fits else f"; does not fit {self.gpu} ({spare:.2f} GiB over)"
        return (f"{self.title} on {self.model}, batch {self.config['batch']} x {self.config['seq_len']}: "
                f"{self.peak_allocated_gib:.2f} GiB peak allocated, {self.device_used_gib:.2f} GiB device used{fit}")


@dataclass(frozen=True)
class Suggestion:
    """One recommended config: `config` as `recommend --json` writes it, reasons, and ways to keep it."""

    config: dict
    peak_allocated_bytes: int
    device_used_bytes: int
    fits: bool
    reasons: tuple[str, ...]
    plan: dict = field(repr=False)  # the plan document `recommend --out` writes

    def write_plan(self, path) -> Path:
        """Write it as a plan file (`.yaml` or `.json`) for `vramplan run --plan` / `estimate --plan`."""
        from .planner.plan_file import write_plan

        write_plan(Path(path), {k: v for k, v in self.plan.items() if k != "vramplan_plan"})
        return Path(path)

    def export(self, kind: str, path, dataset=None) -> list[str]:
        """Write it as a `trl`, `axolotl`, `llama-factory` or `accelerate` config; returns notes."""
        from .planner.interop import export_config

        text, notes = export_config(kind, self.plan, str(dataset) if dataset else None)
        Path(path).write_text(text, encoding="utf-8")
        return notes


def _gpu(gpu, gpu_mem):
    from .planner.catalog import custom_gpu, resolve_gpu
    from .planner.units import parse_size

    if gpu is not None and gpu_mem is not None:
        from .planner.errors import ConfigError

        raise ConfigError("give either gpu= or gpu_mem=, not both")
    if gpu_mem is not None:
        return custom_gpu(gpu_mem if isinstance(gpu_mem, int) else parse_size(str(gpu_mem)))
    return resolve_gpu(gpu) if gpu is not None else None


def _split_settings(settings: dict) -> tuple[dict, tuple]:
    """RunConfig fields and method options out of keyword settings.

    Raises:
        ConfigError: an unknown setting; the message lists the known ones.
    """
    from .planner.errors import ConfigError
    from .planner.interop.to_run import RUN_FIELDS
    from .planner.methods import method_options

    options = {option.name for option in method_options()}
    unknown = sorted(set(settings) - set(RUN_FIELDS) - options)
    if unknown:
        raise ConfigError(f"unknown setting {', '.join(unknown)}; known: {', '.join(RUN_FIELDS + tuple(sorted(options)))}")
    run = {k: v for k, v in settings.items() if k in RUN_FIELDS and v is not None}
    if isinstance(run.get("targets"), str):
        run["targets"] = tuple(part.strip() for part in run["targets"].split(",") if part.strip())
    elif "targets" in run:
        run["targets"] = tuple(run["targets"])
    return run, tuple(sorted((k, v) for k, v in settings.items() if k in options and v is not None))


def estimate(model: str | None = None, gpu: str | None = None, *, method: str | None = None, gpu_mem=None,
             from_config=None, gpus: int = 1, strategy: str | None = None, offload: str = "none", db=None,
             **settings) -> EstimateResult:
    """Estimate one fine-tuning run, as `vramplan estimate` does for one method.

    Args:
        model: catalog id, alias, size (`"8b"`), or a local config.json / model directory
            (optional with `from_config` when the file names one).
        gpu: GPU key (`"t4"`, `"a100-80gb"`); or `gpu_mem="22GiB"` for any other.
        method: `full`, `lora`, `qlora`, `dora`, `qdora`, ... [default: the file's, else qlora].
        from_config: a tool's config path (axolotl, LLaMA-Factory, TRL, PEFT, torchtune,
            accelerate) or a list of them; settings given here win over it.
        gpus, strategy, offload: memory per GPU under DDP / FSDP / ZeRO.
        db: the measurement store whose calibration for `gpu` to use.
        **settings: rank, alpha, dropout, targets, batch, seq_len, grad_ckpt, optimizer,
            precision, attention, double_quant, adapter_dtype, and method options (adapter_size, ...).

    Raises:
        VramplanError: unknown model, GPU or setting, or an impossible run.
    """
    from dataclasses import replace

    from .planner.catalog import resolve_model
    from .planner.errors import ConfigError
    from .planner.limits import compare_methods
    from .planner.plan_file import parallel_plan
    from .planner.specs import RunConfig
    from .reports.estimate_json import estimate_dict

    gpu_spec = _gpu(gpu, gpu_mem)
    run_settings, options = _split_settings(settings)
    imported = None
    if from_config is not None:
        from .planner.interop import read_tool_configs, run_from_imported

        paths = [from_config] if isinstance(from_config, (str, Path)) else list(from_config)
        files = read_tool_configs(paths)
        given = {**run_settings, **({"model": model} if model else {}),
                 **({"gpus": gpus} if gpus != 1 else {}), **({"strategy": strategy} if strategy else {})}
        result = run_from_imported(files, given, method, gpu_spec is None or gpu_spec.bf16)
        run, model = result.run, model or files.get("model")
        if not model:
            raise ConfigError(f"{', '.join(files.files)} name no model; pass model=")
        gpus, strategy, offload = result.gpus, result.strategy, result.offload
        if gpus == 1 and strategy not in (None, "ddp"):
            strategy, offload = None, "none"  # the files shard, but over how many GPUs is the launcher's: pass gpus=
        imported = {**files.summary(), "notes": list(files.notes) + list(result.notes)}
    else:
        if not model:
            raise ConfigError("estimate() needs a model (or from_config=)")
        precision = run_settings.pop("precision", None) or ("bf16" if gpu_spec is None or gpu_spec.bf16 else "fp16")
        run = RunConfig(method=method or "qlora", precision=precision, **run_settings)
    if options:
        run = replace(run, method_options=options)
    corrections = None
    if gpu_spec is not None and (db is not None or gpu_spec.key != "custom"):
        from .calibrate.lookup import corrections_for

        corrections = corrections_for(gpu_spec, db)
    resolved = resolve_model(str(model))
    (result,) = compare_methods(resolved.spec, run, (run.method,), gpu_spec, corrections, parallel_plan(gpus, strategy, offload))
    document = estimate_dict(result)
    return EstimateResult(
        model=resolved.spec.name, method=run.method, title=run.method_record.title,
        peak_allocated_bytes=document["peak_allocated_bytes"], peak_reserved_bytes=document["peak_reserved_bytes"],
        device_used_bytes=document["device_used_bytes"], peak_phase=document["peak_phase"], fits=document["fits"],
        headroom_bytes=document["headroom_bytes"], gpu=gpu_spec.name if gpu_spec else None, max_batch=result.max_batch,
        max_seq_len=result.max_seq_len, components=document["components"], config=document["config"], document=document,
        imported=imported,
    )


def recommend(model: str, gpu: str | None = None, *, gpu_mem=None, goal: str = "quality", dataset=None,
              dataset_size: int | None = None, seq_len: int | None = None, gpus: int = 1, methods=None, top: int = 5,
              db=None) -> list[Suggestion]:
    """The best configs that fit, best first, as `vramplan recommend` finds them.

    Args:
        model, gpu, gpu_mem, db: as for `estimate`.
        goal: `quality`, `speed` or `memory`.
        dataset: a data file or save_to_disk folder (its size and p99 length set rank, epochs
            and sequence length); or `dataset_size=`.
        seq_len: fix the sequence length [default: from the dataset, else 2048].
        gpus: GPUs of this kind; methods: the methods to consider [default: all].

    Raises:
        VramplanError: unknown model or GPU, no GPU given, or nothing fits.
    """
    from .planner.advisor import recommend as advise
    from .planner.catalog import resolve_model
    from .planner.errors import ConfigError
    from .planner.margin import margin_ratio_for
    from .planner.methods import METHOD_KEYS
    from .planner.plan_file import plan_document
    from .reports.advice import config_of

    gpu_spec = _gpu(gpu, gpu_mem)
    if gpu_spec is None:
        raise ConfigError("recommend() needs gpu= (a GPU key) or gpu_mem=")
    resolved = resolve_model(model)
    if dataset is not None:
        from .planner.dataset_stats import dataset_stats

        local = Path(model).expanduser()
        stats = dataset_stats(Path(dataset), (local if local.is_dir() else local.parent) if local.exists() else None)
        dataset_size, seq_len = stats.examples, seq_len or stats.seq_len()
    corrections = None
    if gpu_spec.key != "custom" or db is not None:
        from .calibrate.lookup import corrections_for

        corrections = corrections_for(gpu_spec, db)
    ratio, _ = margin_ratio_for(corrections)
    chosen = tuple(methods) if methods else METHOD_KEYS
    recs = advise(resolved.spec, gpu_spec, seq_len or 2048, goal, dataset_size, corrections, ratio, methods=chosen, top=top, gpus=gpus)
    gpu_doc = {"name": gpu_spec.name, "key": gpu_spec.key, "total_bytes": gpu_spec.total_bytes}
    local = Path(model).expanduser()
    planned = str(local.resolve()) if local.exists() else resolved.spec.name
    out = []
    for rec in recs:
        breakdown = rec.estimate.breakdown
        plan = plan_document(planned, gpu_doc, rec.run, rec.parallel, training=config_of(rec), goal=goal, reasons=rec.reasons)
        out.append(Suggestion(config_of(rec), breakdown.peak_allocated_bytes, breakdown.device_used_bytes,
                              breakdown.device_used_bytes <= gpu_spec.total_bytes, tuple(rec.reasons), plan))
    return out
