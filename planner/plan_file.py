"""Plan files: what `recommend --out` writes and `run --plan` / `estimate --plan` read back.

One document, JSON or YAML::

    vramplan_plan: 1                      # the format version
    model: meta-llama/Meta-Llama-3-70B    # what the plan was made for
    gpu: {name, key, total_bytes}         # the GPU (each of `config.gpus`); null: none in particular
    goal: quality
    config: {method, rank, ..., gpus, strategy, offload, learning_rate, ...}
    reasons: [...]

This module writes it, reads and validates it (every problem is a `ConfigError` naming the
file), and turns it back into the `RunConfig` and `ParallelPlan` it was made from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .sharding import OFFLOADS, STRATEGIES, ParallelPlan
from .specs import GpuSpec, RunConfig
from .vision.run import STAGES as VLM_STAGES
from .vision.run import VlmRun

PLAN_VERSION = 1
DOCUMENT_KEYS = ("model", "gpu", "config")  # goal and reasons are for people; nothing reads them back
GPU_KEYS = ("name", "key", "total_bytes")
ESTIMATE_KEYS = ("method", "batch", "seq_len", "grad_ckpt", "optimizer", "precision")  # what `estimate --plan` cannot guess
PARALLEL_KEYS = ("gpus", "strategy", "offload")
# the RunConfig fields a config may carry beyond ESTIMATE_KEYS (absent or null: RunConfig's default)
OPTIONAL_RUN_KEYS = ("rank", "alpha", "dropout", "attention", "double_quant", "adapter_dtype")
# the memory savers (planner/savers.py): written only when not the plain run's, so older plans read the same
SAVER_KEYS = ("loss", "loss_chunk", "offload_activations", "packing", "expandable_segments", "kbit_upcast")
# the transformers version a plan was made for (`recommend --transformers-version`); absent: the installed one.
# `estimate --plan` models it; `run` always trains with the installed transformers.
STACK_KEYS = ("transformers_version",)
REWRITE = "write it again with `vramplan recommend ... --out FILE`"


def _is_yaml(path: Path) -> bool:
    return path.suffix in (".yaml", ".yml")


# ---------------------------------------------------------------- parallel settings
def parallel_plan(gpus: int, strategy: str | None, offload: str = "none") -> ParallelPlan | None:
    """The multi-GPU plan of `--gpus/--strategy/--offload`, or None for one GPU.

    Raises:
        ConfigError: fewer than one GPU, several without a strategy, or a combination
            `ParallelPlan` refuses.
    """
    if gpus == 1 and strategy is None and offload == "none":
        return None
    if gpus < 1:
        raise ConfigError(f"--gpus must be 1 or more, got {gpus}")
    if strategy is None:
        raise ConfigError(f"--gpus above 1 needs --strategy: {', '.join(STRATEGIES[:-1])} or {STRATEGIES[-1]}")
    return ParallelPlan(strategy, gpus, offload)


def parallel_fields(parallel: ParallelPlan | None) -> dict:
    """The `config` keys that record how a run is spread over GPUs."""
    if parallel is None:
        return {"gpus": 1, "strategy": None, "offload": "none"}
    return {"gpus": parallel.gpus, "strategy": parallel.strategy, "offload": parallel.offload}


def with_flags(planned: ParallelPlan | None, gpus: int | None = None, strategy: str | None = None,
               offload: str | None = None) -> ParallelPlan | None:
    """A plan's parallel settings with the flags given on the command line put over them.

    None means "not given". `--gpus 1` alone drops the plan's strategy and offload: one GPU
    shards nothing.
    """
    fields = parallel_fields(planned)
    if gpus == 1 and strategy is None:
        fields.update(strategy=None, offload="none")
    given = {"gpus": gpus, "strategy": strategy, "offload": offload}
    fields.update({key: value for key, value in given.items() if value is not None})
    return parallel_plan(fields["gpus"], fields["strategy"], fields["offload"])


# ---------------------------------------------------------------- writing
def run_fields(run: RunConfig) -> dict:
    """The `config` keys that give back `run` (alpha is written resolved: 2 x rank when unset)."""
    adapter = run.has_adapter
    return {
        "method": run.method,
        "rank": run.rank if adapter else None,
        "alpha": run.lora_alpha if adapter else None,
        "dropout": run.dropout if adapter else None,
        "target_preset": ",".join(run.targets) if adapter else None,
        "batch": run.batch,
        "grad_ckpt": run.grad_ckpt,
        "optimizer": run.optimizer,
        "precision": run.precision,
        "seq_len": run.seq_len,
        "attention": run.attention,
        "double_quant": run.double_quant,
        "adapter_dtype": run.adapter_dtype,
        # settings only some methods have (e.g. an Adapter's bottleneck size); none: the method's defaults
        **({"method_options": dict(options)} if (options := getattr(run, "method_options", ())) else {}),
        **{key: getattr(run, key) for key in SAVER_KEYS if getattr(run, key) != RunConfig.__dataclass_fields__[key].default},
        **{key: getattr(run, key) for key in STACK_KEYS if getattr(run, key) is not None},
    }


def plan_document(model: str, gpu: dict | None, run: RunConfig, parallel: ParallelPlan | None, *,
                  training: dict | None = None, goal: str | None = None, reasons=(), stages=()) -> dict:
    """The plan for `run` on `gpu` (each of `parallel.gpus`).

    Args:
        model: the model name the plan is for.
        gpu: {"name", "key", "total_bytes"} of the GPU, or None.
        run: what was estimated.
        parallel: how it is spread over GPUs; None for one GPU.
        training: further config keys (the recommendation's grad_accum, learning_rate, ...),
            written first; `run` and `parallel` win where they overlap.
        goal, reasons: why this config, for people.
        stages: a VLM plan's `stage_entry` dicts (both stages); `run` is then stage 2's.
    """
    config = {**(training or {}), **run_fields(run), **parallel_fields(parallel)}
    document = {"vramplan_plan": PLAN_VERSION, "model": model, "gpu": gpu, "goal": goal, "config": config, "reasons": list(reasons)}
    if stages:
        document["stages"] = list(stages)
    return document


def write_plan(path: Path, plan: dict) -> None:
    """Write JSON, or YAML when the name ends in .yaml/.yml.

    Raises:
        ConfigError: `plan` is not one `read_plan` would accept, or the folder does not exist.
        FileAccessError: the file cannot be written (read-only, disk full); nothing is left behind.
    """
    path = Path(path)
    document = {"vramplan_plan": PLAN_VERSION, **plan}
    validate_plan(document, f"plan {path}")
    from .files import atomic_write, check_output_file

    check_output_file(path, "--out")
    if _is_yaml(path):
        import yaml

        atomic_write(path, yaml.safe_dump(document, sort_keys=False), "--out")
    else:
        atomic_write(path, json.dumps(document, indent=2) + "\n", "--out")


# ---------------------------------------------------------------- reading
def read_plan(path: Path, label: str | None = None) -> dict:
    """Read and validate a plan file.

    Args:
        path: the file.
        label: how errors name it [default: `--plan PATH`].

    Raises:
        ConfigError: missing, not UTF-8, unparseable, not a vramplan plan, or missing what a
            plan holds (a truncated file).
    """
    path = Path(path)
    label = label or f"--plan {path}"
    if path.is_dir():
        raise ConfigError(f"{label} is a directory; give the plan file `vramplan recommend --out` wrote")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{label} is not a regular file; give the plan file `vramplan recommend --out` wrote")
    if not path.is_file():
        raise ConfigError(f"{label} does not exist; make one with `vramplan recommend ... --out {path.name}`")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{label} is not UTF-8 text (byte {exc.start}); a plan is the JSON or YAML `vramplan recommend --out` writes") from None
    try:
        if _is_yaml(path):
            import yaml

            document = yaml.safe_load(text)
        else:
            document = json.loads(text)
    except Exception as exc:  # yaml and json raise different types; both mean "not readable"
        reason = " ".join(str(exc).split())
        raise ConfigError(f"{label} is not valid {'YAML' if _is_yaml(path) else 'JSON'} ({reason}); {REWRITE}") from None
    validate_plan(document, label)
    return document


def validate_plan(document, label: str) -> None:
    """Check the shape of a plan document; every problem is named at once.

    Raises:
        ConfigError: not a plan, a newer format, or missing or mistyped entries.
    """
    if not isinstance(document, dict) or "vramplan_plan" not in document:
        raise ConfigError(f"{label} is not a vramplan plan (written by `vramplan recommend --out`)")
    if document["vramplan_plan"] != PLAN_VERSION:
        raise ConfigError(f"{label} has plan format {document['vramplan_plan']!r}; this vramplan reads format {PLAN_VERSION}: {REWRITE}")
    missing = [key for key in DOCUMENT_KEYS if key not in document]
    if missing:
        raise ConfigError(f"{label} has no {', '.join(missing)} (a truncated file?): {REWRITE}")
    problems = []
    model = document["model"]
    if not (isinstance(model, str) and model):
        problems.append(f"model must be a model name, got {model!r}")
    gpu = document["gpu"]
    if gpu is not None:
        if not isinstance(gpu, dict):
            problems.append(f"gpu must be a mapping of {', '.join(GPU_KEYS)} (or null), got {gpu!r}")
        else:
            lacking = [key for key in GPU_KEYS if gpu.get(key) in (None, "")]
            if lacking:
                problems.append(f"gpu has no {', '.join(lacking)}")
            elif not isinstance(gpu["total_bytes"], int) or isinstance(gpu["total_bytes"], bool) or gpu["total_bytes"] <= 0:
                problems.append(f"gpu.total_bytes must be a positive number of bytes, got {gpu['total_bytes']!r}")
    config = document["config"]
    if not isinstance(config, dict):
        problems.append(f"config must be a mapping of settings, got {config!r}")
    elif not config.get("method"):
        problems.append("config has no method")
    else:
        problems += _parallel_problems(config)
    if document.get("stages") is not None:
        problems += _stage_problems(document["stages"])
    if problems:
        raise ConfigError(f"{label}: {'; '.join(problems)}; {REWRITE}")


def _parallel_problems(config: dict) -> list[str]:
    gpus, strategy, offload = config.get("gpus", 1), config.get("strategy"), config.get("offload", "none")
    problems = []
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
        problems.append(f"config.gpus must be a whole number of 1 or more, got {gpus!r}")
    if strategy is not None and strategy not in STRATEGIES:
        problems.append(f"config.strategy {strategy!r} is not one of: {', '.join(STRATEGIES)}")
    if offload is not None and offload not in OFFLOADS:
        problems.append(f"config.offload {offload!r} is not one of: {', '.join(OFFLOADS)}")
    return problems


# ---------------------------------------------------------------- what a plan describes
def run_from_plan(plan: dict, label: str = "--plan") -> RunConfig:
    """The RunConfig a (validated) plan's `config` describes.

    grad_accum is (accumulated gradients stay live); learning_rate and epochs do not change memory.

    Raises:
        ConfigError: the config lacks what an estimate needs, or holds impossible values.
    """
    config = plan["config"]
    missing = [key for key in ESTIMATE_KEYS if config.get(key) is None]
    if missing:
        raise ConfigError(f"{label}: config has no {', '.join(missing)} (a truncated file?); {REWRITE}")
    values = {key: config[key] for key in ESTIMATE_KEYS}
    values.update({key: config[key] for key in OPTIONAL_RUN_KEYS + SAVER_KEYS + STACK_KEYS if config.get(key) is not None})
    if config.get("grad_accum") is not None:  # accumulated gradients stay live between micro-batches
        values["grad_accum"] = config["grad_accum"]
    options = config.get("method_options")
    if options:
        if not isinstance(options, dict):
            raise ConfigError(f"{label}: config.method_options must be a mapping of option to value, got {options!r}; {REWRITE}")
        values["method_options"] = tuple(sorted(options.items()))
    preset, targets = config.get("target_preset"), config.get("targets")
    if preset:  # what the run was estimated with (e.g. all-linear), not its expansion
        values["targets"] = tuple(part.strip() for part in str(preset).split(",") if part.strip())
    elif targets:
        values["targets"] = tuple(targets) if isinstance(targets, (list, tuple)) else (str(targets),)
    try:
        return RunConfig(**values)
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    except (TypeError, ValueError) as exc:  # e.g. batch: "four"
        raise ConfigError(f"{label}: the config does not describe a run ({exc}); {REWRITE}") from None


def parallel_from_plan(plan: dict, label: str = "--plan") -> ParallelPlan | None:
    """How a (validated) plan spreads its run over GPUs; None for one GPU.

    Raises:
        ConfigError: a combination `ParallelPlan` refuses (e.g. offload under DDP).
    """
    config = plan["config"]
    try:
        return parallel_plan(config.get("gpus", 1), config.get("strategy"), config.get("offload") or "none")
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None


def gpu_from_plan(plan: dict) -> GpuSpec | None:
    """The GPU a (validated) plan was made for: its catalog preset, or one known by its memory.

    Raises:
        UnknownGpuError: the key is in no catalog this vramplan knows.
    """
    gpu = plan["gpu"]
    if gpu is None:
        return None
    from .catalog import custom_gpu, resolve_gpu

    if gpu["key"] == "custom":
        return custom_gpu(int(gpu["total_bytes"]))
    return resolve_gpu(gpu["key"])


# ---------------------------------------------------------------- VLM stages
# A VLM plan carries both training stages under "stages"; the top-level "config" stays the
# stage-2 one, so readers that know nothing of stages still run (and estimate) the main stage.
STAGE_KEYS = ("stage", "config", "vlm", "lr")
LR_KEYS = ("learning_rate", "projector_lr", "vision_lr_scale")


@dataclass(frozen=True)
class VlmStagePlan:
    """One stage of a VLM plan: the LLM's run, the VLM knobs and the per-component learning rates.

    `projector_lr` None: the projector trains at `learning_rate`; `vision_lr_scale` multiplies
    `learning_rate` for a trained vision tower (ignored while it is frozen).
    """

    stage: int
    run: RunConfig
    vlm: VlmRun
    learning_rate: float
    projector_lr: float | None = None
    vision_lr_scale: float = 1.0


def stage_entry(stage: VlmStagePlan, training: dict | None = None, parallel: ParallelPlan | None = None) -> dict:
    """The `stages` item for `stage`: its config has the top-level config's keys.

    `training` (grad_accum, epochs, ...) goes into the config first; the stage's run, parallel
    settings and learning rate win where they overlap.
    """
    return {
        "stage": stage.stage,
        "config": {**(training or {}), **run_fields(stage.run), **parallel_fields(parallel),
                   "learning_rate": stage.learning_rate},
        "vlm": stage.vlm.as_dict(),
        "lr": {"learning_rate": stage.learning_rate, "projector_lr": stage.projector_lr,
               "vision_lr_scale": stage.vision_lr_scale},
    }


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _stage_problems(stages) -> list[str]:
    """What is wrong with a document's `stages` (shape only; `read_vlm_stages` builds them)."""
    if not isinstance(stages, list) or not stages:
        return [f"stages must be a list of stage entries ({', '.join(STAGE_KEYS)}), got {stages!r}"]
    problems = []
    for index, entry in enumerate(stages):
        where = f"stages[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} must be a mapping of {', '.join(STAGE_KEYS)}, got {entry!r}")
            continue
        missing = [key for key in STAGE_KEYS if key not in entry]
        if missing:
            problems.append(f"{where} has no {', '.join(missing)}")
            continue
        if entry["stage"] not in VLM_STAGES or isinstance(entry["stage"], bool):
            problems.append(f"{where}.stage must be 1 or 2, got {entry['stage']!r}")
        for key in ("config", "vlm", "lr"):
            if not isinstance(entry[key], dict):
                problems.append(f"{where}.{key} must be a mapping, got {entry[key]!r}")
        if isinstance(entry["config"], dict) and not entry["config"].get("method"):
            problems.append(f"{where}.config has no method")
        lr = entry["lr"]
        if isinstance(lr, dict):
            if not (_is_number(lr.get("learning_rate")) and lr["learning_rate"] > 0):
                problems.append(f"{where}.lr.learning_rate must be a positive number, got {lr.get('learning_rate')!r}")
            projector = lr.get("projector_lr")
            if projector is not None and not (_is_number(projector) and projector > 0):
                problems.append(f"{where}.lr.projector_lr must be a positive number or null, got {projector!r}")
            scale = lr.get("vision_lr_scale", 1.0)
            if not (_is_number(scale) and scale >= 0):
                problems.append(f"{where}.lr.vision_lr_scale must be a number >= 0, got {scale!r}")
    numbers = [entry.get("stage") for entry in stages if isinstance(entry, dict)]
    if len(set(numbers)) != len(numbers):
        problems.append(f"stages lists a stage twice ({numbers})")
    return problems


def read_vlm_stages(plan: dict, label: str = "--plan") -> list[VlmStagePlan]:
    """The VLM stages of a plan document, in stage order; [] for a plan without `stages`.

    Args:
        plan: a document `read_plan` returned (or `plan_document` built).
        label: how errors name the file, e.g. `--plan plan.json`.

    Raises:
        ConfigError: naming the file and the key (`stages[1].vlm`, ...) of every problem.
    """
    stages = plan.get("stages")
    if stages is None:
        return []
    problems = _stage_problems(stages)
    if problems:
        raise ConfigError(f"{label}: {'; '.join(problems)}; {REWRITE}")
    result = []
    for index, entry in enumerate(stages):
        where = f"{label}: stages[{index}]"
        run = run_from_plan({"config": entry["config"]}, where)  # its errors name "config has no ..."
        try:
            vlm = VlmRun.from_dict(entry["vlm"])
        except ConfigError as exc:
            raise ConfigError(f"{where}.vlm: {exc}; {REWRITE}") from None
        except (TypeError, ValueError) as exc:  # an unknown or mistyped key
            raise ConfigError(f"{where}.vlm does not describe the VLM settings ({exc}); {REWRITE}") from None
        if vlm.stage != entry["stage"]:
            raise ConfigError(f"{where}: stage {entry['stage']} but vlm.stage {vlm.stage}; {REWRITE}")
        lr = entry["lr"]
        result.append(VlmStagePlan(stage=entry["stage"], run=run, vlm=vlm, learning_rate=float(lr["learning_rate"]),
                                   projector_lr=None if lr.get("projector_lr") is None else float(lr["projector_lr"]),
                                   vision_lr_scale=float(lr.get("vision_lr_scale", 1.0))))
    return sorted(result, key=lambda stage: stage.stage)
