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
from pathlib import Path

from .errors import ConfigError
from .sharding import OFFLOADS, STRATEGIES, ParallelPlan
from .specs import GpuSpec, RunConfig

PLAN_VERSION = 1
DOCUMENT_KEYS = ("model", "gpu", "config")  # goal and reasons are for people; nothing reads them back
GPU_KEYS = ("name", "key", "total_bytes")
ESTIMATE_KEYS = ("method", "batch", "seq_len", "grad_ckpt", "optimizer", "precision")  # what `estimate --plan` cannot guess
PARALLEL_KEYS = ("gpus", "strategy", "offload")
# the RunConfig fields a config may carry beyond ESTIMATE_KEYS (absent or null: RunConfig's default)
OPTIONAL_RUN_KEYS = ("rank", "alpha", "dropout", "attention", "double_quant", "adapter_dtype")
# the memory savers (planner/savers.py): written only when not the plain run's, so older plans read the same
SAVER_KEYS = ("loss", "loss_chunk", "offload_activations", "packing", "expandable_segments")
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
    }


def plan_document(model: str, gpu: dict | None, run: RunConfig, parallel: ParallelPlan | None, *,
                  training: dict | None = None, goal: str | None = None, reasons=()) -> dict:
    """The plan for `run` on `gpu` (each of `parallel.gpus`).

    Args:
        model: the model name the plan is for.
        gpu: {"name", "key", "total_bytes"} of the GPU, or None.
        run: what was estimated.
        parallel: how it is spread over GPUs; None for one GPU.
        training: further config keys (the recommendation's grad_accum, learning_rate, ...),
            written first; `run` and `parallel` win where they overlap.
        goal, reasons: why this config, for people.
    """
    config = {**(training or {}), **run_fields(run), **parallel_fields(parallel)}
    return {"vramplan_plan": PLAN_VERSION, "model": model, "gpu": gpu, "goal": goal, "config": config, "reasons": list(reasons)}


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

    grad_accum, learning_rate and epochs do not change memory and are not part of it.

    Raises:
        ConfigError: the config lacks what an estimate needs, or holds impossible values.
    """
    config = plan["config"]
    missing = [key for key in ESTIMATE_KEYS if config.get(key) is None]
    if missing:
        raise ConfigError(f"{label}: config has no {', '.join(missing)} (a truncated file?); {REWRITE}")
    values = {key: config[key] for key in ESTIMATE_KEYS}
    values.update({key: config[key] for key in OPTIONAL_RUN_KEYS + SAVER_KEYS if config.get(key) is not None})
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
