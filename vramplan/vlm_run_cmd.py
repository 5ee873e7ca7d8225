"""`vramplan run` for vision-language models: one stage, both (`--schedule two-stage`), or a plan's stages.

`run_cmd.run_command` hands over here when `--model` is a VLM directory (or a VLM flag is
given); the text flags keep their meaning for the LLM. The seeds' defaults: stage 1 trains the
projector only at lr 1e-3; stage 2 the projector plus LoRA r16 a32 on the LLM at lr 2e-4, the
vision tower frozen (or at lr x --vision-lr-scale when --vision lora/full trains it).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from .planner.errors import ConfigError
from .planner.vision.run import SCHEDULES, VISION_STRATEGIES

VLM_RUN_FLAGS = ("stage", "schedule", "init_from", "vision", "vision_lr_scale", "projector_lr")
DEFAULT_VISION_LR_SCALE = 0.1  # the seeds: a trained vision tower at a tenth of the LLM's lr


def vlm_run_options(func):
    """--stage, --schedule, --init-from, --vision, --vision-lr-scale, --projector-lr on `vramplan run`."""
    options = [
        click.option("--stage", type=click.Choice(["1", "2"]), default=None, help="VLM: train stage 1 (projector only, lr 1e-3) or stage 2 (projector + LoRA on the LLM, lr 2e-4) [default: 2]."),
        click.option("--schedule", type=click.Choice(SCHEDULES), default=None, help="VLM: both stages in one command, into OUT/stage-1 and OUT/stage-2 (stage 2 starts from stage 1's projector)."),
        click.option("--init-from", "init_from", default=None, type=click.Path(file_okay=False), help="VLM --stage 2: start from this stage-1 output (its --out, or its projector/ folder)."),
        click.option("--vision", "vision", type=click.Choice(VISION_STRATEGIES), default=None, help="VLM: vision tower frozen, LoRA on its blocks, or fully trained [default: freeze]."),
        click.option("--vision-lr-scale", type=float, default=None, help=f"VLM: a trained vision tower's lr is the LLM's lr times this [default: {DEFAULT_VISION_LR_SCALE}]."),
        click.option("--projector-lr", type=float, default=None, help="VLM: the projector's learning rate [default: the stage's lr]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def pop_vlm_flags(params: dict) -> dict:
    return {name: params.pop(name) for name in VLM_RUN_FLAGS}


def vlm_flags_given(values: dict) -> bool:
    return any(value is not None for value in values.values())


def _typed(ctx, name: str) -> bool:
    from .run_cmd import _typed as typed

    return typed(ctx, name)


def _stage_plans(ctx, params: dict, values: dict, target_gpu) -> list[dict]:
    """One entry per stage to train: run, vlm, lr, projector_lr, vision_lr_scale (flags, seeds' defaults)."""
    from .calibrate.trainer.vlm_loop import STAGE_LR
    from .cli import options_from_kwargs
    from .commands import build_run
    from .planner.vision.run import VlmRun

    method = params.pop("method") if _typed(ctx, "method") else "lora"  # the seeds' stage 2: LoRA on the LLM
    params.pop("method", None)
    run = build_run(options_from_kwargs(params), method, target_gpu)
    stages = (1, 2) if values["schedule"] else (int(values["stage"] or 2),)
    lr_given = _typed(ctx, "lr")
    vision = values["vision"] or "freeze"
    scale = DEFAULT_VISION_LR_SCALE if values["vision_lr_scale"] is None else values["vision_lr_scale"]
    return [{"run": run, "vlm": VlmRun(stage=stage, vision=vision if stage == 2 else "freeze"),
             "lr": params["lr"] if lr_given and (stage == 2 or len(stages) == 1) else STAGE_LR[stage],
             "projector_lr": values["projector_lr"], "vision_lr_scale": scale} for stage in stages]


def _plan_stages(ctx, params: dict, plan, target_gpu) -> tuple[list[dict], list[str]]:
    """The plan's stages (planner.plan_file.read_vlm_stages), flags given on the command line winning."""
    from .cli import options_from_kwargs
    from .commands import build_run
    from .planner.plan_file import read_plan, read_vlm_stages
    from .run_cmd import apply_plan

    doc = read_plan(Path(plan))
    stages = read_vlm_stages(doc, f"--plan {plan}")
    if not stages:
        raise ConfigError(f"--plan {plan} has no VLM stages: make it with `vramplan recommend --model <vlm> --out {plan}`")
    notes = _gpu_notes(doc, target_gpu, params["force"], plan)
    entries = []
    for stage, raw in zip(stages, sorted(doc["stages"], key=lambda entry: entry["stage"])):
        stage_params = dict(params)
        stage_notes, _ = apply_plan(ctx, stage_params, {"config": raw["config"]}, plan)
        notes += [note for note in stage_notes if note not in notes]
        stage_params.pop("gpus", None), stage_params.pop("strategy", None)
        run = build_run(options_from_kwargs(stage_params), stage_params.pop("method"), target_gpu)
        lr = params["lr"] if _typed(ctx, "lr") else stage.learning_rate
        entries.append({"run": run, "vlm": stage.vlm, "lr": lr, "projector_lr": stage.projector_lr, "vision_lr_scale": stage.vision_lr_scale,
                        "grad_accum": stage_params["grad_accum"], "epochs": stage_params["epochs"]})
    return entries, notes


def _gpu_notes(doc: dict, target_gpu, force: bool, plan) -> list[str]:
    """Refuse a plan made for another GPU (`--force`: a note), as `run_cmd.check_plan_target` does for text."""
    from .run_cmd import same_gpu

    planned = doc.get("gpu")
    if not isinstance(planned, dict) or not planned:
        return []
    label = planned.get("name") or planned.get("key")
    problem = None
    if target_gpu is None:
        problem = f"it was made for {label} but no GPU is given (--gpu) or visible"
    elif not same_gpu(planned, target_gpu):
        problem = f"it was made for {label}, not {target_gpu.name}"
    if problem and not force:
        raise ConfigError(f"--plan {plan}: {problem}; make a plan for this setup, or pass --force to use it anyway")
    return [f"--plan: {problem} (--force)"] if problem else []


def _check_values(values: dict, plan) -> None:
    problems = []
    if values["schedule"] and values["stage"]:
        problems.append("give either --stage or --schedule two-stage, not both")
    if values["init_from"] and (values["schedule"] or values["stage"] != "2"):
        problems.append("--init-from goes with --stage 2 (--schedule two-stage starts stage 2 from its own stage 1)")
    if plan and (values["schedule"] or values["stage"]):
        problems.append("--plan brings its own stages: leave out --stage / --schedule")
    if problems:
        raise ConfigError("; ".join(problems))


def run_vlm_command(ctx, params: dict, values: dict, model_dir: Path, model_config: dict, gpu_spec, html_path) -> None:
    """Train the stage(s) and print each stage's summary (the CLI side of `vlm_loop`)."""
    from .planner.vision import is_vlm_config

    if not is_vlm_config(model_config):
        given = ", ".join(f"--{name.replace('_', '-')}" for name, value in values.items() if value is not None)
        raise ConfigError(f"{given}: only for a vision-language model directory (config.json with a vision_config); {model_dir} is a text model")
    plan = params.pop("plan")
    _check_values(values, plan)
    for name in ("gpus", "strategy"):
        if params[name] not in (1, None) and not plan:
            raise ConfigError(f"--{name}: VLM runs train on one device yet")
    if params["merge"]:
        raise ConfigError("--merge: a VLM stage saves its projector and adapter (OUT/adapter); merging is not offered for VLMs yet")
    from .run_cmd import _detected_gpu, _summary

    target_gpu = gpu_spec or _detected_gpu(params["device"])
    params.pop("apply_recommendation"), params.pop("allow_long_context", None)
    notes = []
    if plan:
        entries, notes = _plan_stages(ctx, params, plan, target_gpu)
    else:
        entries = _stage_plans(ctx, params, values, target_gpu)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    two = len(entries) > 1
    out = Path(params["out"]) if params["out"] else Path("runs") / f"{model_dir.resolve().name}-vlm-{'two-stage' if two else 'stage' + str(entries[0]['vlm'].stage)}"
    _check_out(out, two, params["resume"])
    from .calibrate.store_check import check_store
    from .quiet import quiet_libraries

    check_store(params["db"], write=True)
    quiet_libraries(lambda message: click.echo(message, err=True), progress=not params["no_progress"])
    from .calibrate.trainer.vlm_loop import VlmTrainConfig, stage_weights_dir, train_vlm

    log = lambda message: click.echo(message, err=True)  # noqa: E731
    command = "vramplan " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    last = None
    for entry in entries:
        stage = entry["vlm"].stage
        stage_out = out / f"stage-{stage}" if two else out
        init = stage_weights_dir(out / "stage-1", 1) if two and stage == 2 else values["init_from"]
        config = VlmTrainConfig(
            model_path=model_dir, data_path=Path(params["data"]), out_dir=stage_out, run=entry["run"], vlm=entry["vlm"],
            grad_accum=entry.get("grad_accum", params["grad_accum"]), learning_rate=entry["lr"], epochs=entry.get("epochs", params["epochs"]),
            max_steps=params["max_steps"], save_every=params["save_every"], seed=params["seed"], device=params["device"], gpu=gpu_spec,
            db=params["db"], resume=params["resume"] and (not two or stage_out.is_dir()), force=params["force"], auto_fallback=params["auto_fallback"],
            skip_bad_rows=params["skip_bad_rows"], progress=not params["no_progress"], log=log, command=command,
            init_from=init, projector_lr=entry["projector_lr"], vision_lr_scale=entry["vision_lr_scale"],
        )
        if two and params["resume"] and _finished(stage_out):
            click.echo(f"stage {stage}: already finished in {stage_out}")
            continue
        what = "projector only" if stage == 1 else f"projector + {entry['run'].method} on the LLM"
        click.echo(f"stage {stage}: {what}, lr {entry['lr']:g}" + (f", projector lr {entry['projector_lr']:g}" if entry["projector_lr"] else ""))
        _summary(train_vlm(config), params["db"])
        last = stage_out
    if html_path is not None and last is not None:  # both stages' losses and peaks (reports/vlm_html_run.py)
        from .commands import wrote
        from .reports.html_report import write_report
        from .reports.vlm_html_run import vlm_run_page

        wrote(html_path, write_report(html_path, vlm_run_page(out, params["db"]), "--html"))


def _finished(out: Path) -> bool:
    from .calibrate.trainer.marker import read_marker

    marker = read_marker(out)
    return bool(marker) and marker.get("status") == "finished"


def _check_out(out: Path, two: bool, resume: bool) -> None:
    """One stage: the trainer's rules for --out. Two: OUT holds only stage-1/ and stage-2/ (each checked on its own)."""
    from . import preflight

    if not two:
        preflight.check_out_dir(out, resume)
        return
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory")
    others = [p.name for p in out.iterdir() if p.name not in ("stage-1", "stage-2")] if out.is_dir() else []
    if others:
        raise ConfigError(f"--out {out} holds other files ({', '.join(sorted(others)[:3])}); give a new or empty directory")
    for stage in ("stage-1", "stage-2"):
        if (out / stage).is_dir():
            preflight.check_out_dir(out / stage, resume)
