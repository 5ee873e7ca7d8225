"""Subcommands: estimate, models, gpus."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click
from click.core import ParameterSource

from .cli import RunOptions, _split, cli, options_from_kwargs, run_options, transformers_version_option
from .interop_cmd import from_option
from .planner.catalog import custom_gpu, resolve_gpu
from .planner.errors import ConfigError
from .planner.methods import DEFAULT_METHODS, METHODS
from .planner.specs import GpuSpec, RunConfig
from .planner.units import parse_size
from .planner.sharding import OFFLOADS, STRATEGIES
from .planner.vision import is_vlm_config
from .vlm_dataset_cmd import apply_dataset, dataset_option
from .vlm_cmd import VLM_DEFAULT_METHODS, VLM_FLAGS, estimate_vlm_command, vlm_options, vlm_requested


def resolve_gpu_flags(gpu: str | None, gpu_mem: str | None) -> GpuSpec | None:
    if gpu and gpu_mem:
        raise ConfigError("give either --gpu or --gpu-mem, not both")
    if gpu_mem:
        return custom_gpu(parse_size(gpu_mem))
    return resolve_gpu(gpu) if gpu else None


def build_run(options: RunOptions, method: str, gpu: GpuSpec | None) -> RunConfig:
    """RunConfig from the flags; precision defaults to what the GPU can run."""
    precision = options.precision
    if precision is None:
        precision = "bf16" if gpu is None or gpu.bf16 else "fp16"
    uses_bf16 = precision.startswith("bf16") or options.adapter_dtype == "bf16"
    if gpu is not None and not gpu.bf16 and uses_bf16:
        raise ConfigError(f"{gpu.name} has no bf16 support: use --precision fp16 or fp16-mixed (and --adapter-dtype fp32 or fp16)")
    return RunConfig(
        method=method,
        rank=options.rank,
        alpha=options.alpha,
        dropout=options.dropout,
        targets=_split((options.targets,)),
        batch=options.batch,
        seq_len=options.seq_len,
        grad_ckpt=options.grad_ckpt,
        optimizer=options.optimizer,
        precision=precision,
        attention=options.attention,
        double_quant=options.double_quant,
        adapter_dtype=options.adapter_dtype,
        method_options=options.method_options,
        loss=options.loss,
        loss_chunk=options.loss_chunk,
        offload_activations=options.offload_activations,
        packing=options.packing,
        expandable_segments=options.expandable_segments,
        kbit_upcast=options.kbit_upcast,
    )


def _typed(name: str) -> bool:
    """Whether a flag was given (not its default): flags given win over a plan."""
    source = click.get_current_context().get_parameter_source(name)
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def _from_plan(plan_path: Path, model, gpu, gpu_mem, methods, options: RunOptions, gpus, strategy, offload):
    """(model, GPU, run, methods, parallel plan) of `--plan`, with the flags given put over them."""
    from .planner.plan_file import gpu_from_plan, parallel_from_plan, read_plan, run_from_plan, with_flags

    label = f"--plan {plan_path}"
    plan = read_plan(plan_path, label)
    gpu_spec = resolve_gpu_flags(gpu, gpu_mem) if (gpu or gpu_mem) else gpu_from_plan(plan)
    run = run_from_plan(plan, label)
    typed = {name: getattr(options, name) for name in RunOptions.__dataclass_fields__ if name != "method_options" and _typed(name)}
    if "targets" in typed:
        typed["targets"] = _split((typed["targets"],))
    if getattr(options, "method_options", ()):  # e.g. --adapter-size over the plan's
        typed["method_options"] = tuple(sorted({**dict(run.method_options), **dict(options.method_options)}.items()))
    if typed:
        run = replace(run, **typed)
    chosen = parse_methods(methods) if methods else (run.method,)
    flags = {name: value if _typed(name) else None for name, value in (("gpus", gpus), ("strategy", strategy), ("offload", offload))}
    parallel = with_flags(parallel_from_plan(plan, label), **flags)
    return model or plan["model"], gpu_spec, run, chosen, parallel


def wrote(path, size: int, err: bool = False) -> None:
    """`Wrote PATH (size)` after an HTML page; on stderr when stdout carries JSON."""
    click.echo(f"Wrote {path} ({size / 1e6:.1f} MB, {size:,} bytes)", err=err)


def parse_methods(values: tuple[str, ...], default: tuple[str, ...] = DEFAULT_METHODS) -> tuple[str, ...]:
    methods = _split(values) or default
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"--method {','.join(unknown)!r} is not one of: {', '.join(METHODS)}")
    return tuple(dict.fromkeys(methods))


@cli.command()
@click.option("--model", "-m", default=None, help="[required unless --plan] Catalog id or alias (meta-llama/Meta-Llama-3-8B, llama-3-8b), size (8b), or a local config.json / model directory.")
@click.option("--gpu", "-g", default=None, help="GPU key (t4, l4, a100-80gb, h100, ...); see `vramplan gpus`.")
@click.option("--gpu-mem", default=None, help="Any other GPU by its memory, e.g. 22GiB or 24GB.")
@click.option("--method", "methods", multiple=True, help=f"Methods to compare, comma-separated or repeated: {', '.join(METHODS)} [default: {','.join(DEFAULT_METHODS)}].")
@run_options
@click.option("--db", type=click.Path(dir_okay=False), default=None, help="Measurement store whose calibration for --gpu to use [default: the user data directory, if it exists].")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Estimate the config of a plan file written by `vramplan recommend --out`: its model, GPU, settings and --gpus/--strategy/--offload (flags given win).")
@from_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (schema in the README).")
@click.option("--html", "html_path", type=click.Path(path_type=Path), default=None, help="Also write a self-contained HTML page: methods side by side and setting sweeps.")
@click.option("--gpus", type=int, default=1, show_default=True, help="GPUs to spread the run over; with --strategy, memory is reported per GPU.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None, help="Data-parallel engine for --gpus > 1: DDP, FSDP full shard / SHARD_GRAD_OP, or DeepSpeed ZeRO stage 1-3.")
@click.option("--offload", type=click.Choice(OFFLOADS), default="none", show_default=True, help="Offload optimizer states (fsdp, zero*) or parameters too (fsdp, zero3) to host RAM.")
@click.option("--grad-accum", type=int, default=None, help="Micro-batches per optimizer step: above 1 the accumulated gradients stay live through every phase [default: 1, or the plan's].")
@transformers_version_option
@vlm_options
@dataset_option
def estimate(model, gpu, gpu_mem, methods, db, plan_path, from_files, as_json, html_path, gpus, strategy, offload, grad_accum, transformers_version, **kwargs):
    """Estimate peak GPU memory of a fine-tuning run, term by term, per method.

    \b
    Example:
      vramplan estimate --model 8b --gpu t4 --rank 16 --targets all-linear
    """
    from . import preflight
    from .planner.limits import compare_methods

    allow_long = kwargs.pop("allow_long_context")
    vlm_values = {name: kwargs.pop(name) for name in VLM_FLAGS}
    dataset = kwargs.pop("dataset")
    options = options_from_kwargs(kwargs)
    if html_path is not None:
        from .reports.html_report import check_out_path

        check_out_path(html_path, "--html")
    if plan_path is not None:
        model, gpu_spec, base_run, chosen, parallel = _from_plan(plan_path, model, gpu, gpu_mem, methods, options, gpus, strategy, offload)
    elif from_files:
        from .interop_cmd import describe, from_tool_configs

        gpu_spec = resolve_gpu_flags(gpu, gpu_mem)
        model, base_run, chosen, parallel, imported, notes, _ = from_tool_configs(from_files, model, gpu_spec, methods, options, gpus, strategy, offload)
        for line in describe(imported, notes):
            click.echo(line, err=as_json)
    else:
        if not model:
            raise ConfigError("--model is required (or --plan FILE)")
        from .planner.plan_file import parallel_plan

        gpu_spec = resolve_gpu_flags(gpu, gpu_mem)
        chosen = parse_methods(methods)
        base_run = build_run(options, chosen[0], gpu_spec)
        parallel = parallel_plan(gpus, strategy, offload)
    if transformers_version is not None:  # RunConfig checks it (planner/stack.py)
        base_run = replace(base_run, transformers_version=transformers_version)
    if grad_accum is not None:  # RunConfig checks it
        base_run = replace(base_run, grad_accum=grad_accum)
    resolved = preflight.resolve_checked(model)
    if dataset is not None:  # vlm_dataset_cmd.py: the images of a real image-text file
        vlm_values = apply_dataset(dataset, resolved, vlm_values)
    if vlm_requested(vlm_values) or is_vlm_config(resolved.config):  # vision tower + projector + LLM, per stage
        if html_path is not None or parallel is not None or from_files:
            raise ConfigError("--html, --from, --gpus and --strategy are not planned for vision-language models yet; drop them")
        corrections = None
        if gpu_spec is not None and (db is not None or gpu_spec.key != "custom"):
            from .calibrate.lookup import corrections_for

            corrections = corrections_for(gpu_spec, db)
        if plan_path is not None:  # a VLM plan's stages, each as `recommend` wrote it
            from .vlm_recommend_cmd import estimate_plan_stages

            if estimate_plan_stages(plan_path, model, resolved, gpu_spec, corrections, as_json):
                return None
        return estimate_vlm_command(resolved, gpu_spec, base_run, chosen if (methods or plan_path) else VLM_DEFAULT_METHODS, corrections, vlm_values, as_json)
    checks = preflight.check_planned(resolved, base_run, chosen, allow_long, plan_path is not None or bool(from_files) or _typed("seq_len"))
    base_run = checks.run
    corrections = None
    if gpu_spec is not None and (db is not None or gpu_spec.key != "custom"):
        from .calibrate.lookup import corrections_for

        corrections = corrections_for(gpu_spec, db)
    results = checks.cap(compare_methods(resolved.spec, base_run, chosen, gpu_spec, corrections, parallel))
    if not as_json:  # with --json the notes are in the document
        checks.echo()
    if as_json:
        from .reports.estimate_json import estimate_document

        document = estimate_document(results, resolved.note)
        document.update(checks.json_fields())
        if from_files:
            from .interop_cmd import summary

            document["from"] = summary(imported, notes)
        click.echo(json.dumps(document, indent=2))
    else:
        from rich.console import Console

        from .reports.estimate_table import render_estimate

        render_estimate(Console(), results, resolved.note)
    if html_path is not None:
        from .reports.html_report import write_report
        from .reports.html_sections import estimate_page

        store_note = str(db) if db is not None else "the default store (user data directory), if it exists"
        page = estimate_page(resolved, gpu_spec, base_run, chosen, results, corrections, store_note)
        wrote(html_path, write_report(html_path, page, "--html"), err=as_json)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
def models(as_json):
    """List the built-in model catalog and the size shorthands.

    \b
    Example:
      vramplan models
    """
    from .planner.catalog import all_models
    from .planner.catalog.models import SIZE_DEFAULTS

    from .vlm_cmd import render_vlm_catalog, vlm_catalog_rows

    rows = all_models()
    vlm_rows = vlm_catalog_rows()  # vision-language models: a kind and their components besides
    if as_json:
        click.echo(json.dumps([
            {"id": hub_id, "aliases": list(aliases), "model_type": spec.model_type, "base_params": spec.base_params, "kind": "text"}
            for hub_id, aliases, spec in rows
        ] + vlm_rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Model catalog (architecture from each model's config.json)", title_justify="left")
    table.add_column("id", overflow="fold")
    table.add_column("alias", no_wrap=True)
    for column in ("params", "layers", "vocab"):
        table.add_column(column, justify="right", no_wrap=True)
    for hub_id, aliases, spec in rows:
        table.add_row(hub_id, aliases[0] if aliases else "", f"{spec.base_params / 1e9:.2f}B", str(spec.num_layers), f"{spec.vocab_size:,}")
    console = Console()
    console.print(table)
    render_vlm_catalog(console, vlm_rows)
    console.print("Size shorthands: " + ", ".join(f"{size} -> {hub_id}" for size, hub_id in SIZE_DEFAULTS.items()))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
def gpus(as_json):
    """List the GPU presets (memory as the driver reports it).

    \b
    Example:
      vramplan gpus
    """
    from .planner.catalog import all_gpus

    rows = all_gpus()
    if as_json:
        click.echo(json.dumps([
            {"key": g.key, "name": g.name, "total_bytes": g.total_bytes, "bf16": g.bf16,
             "bandwidth_gbps": g.bandwidth_gbps, "bf16_tflops": g.bf16_tflops, "aliases": list(g.aliases)}
            for g in rows
        ], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="GPU presets", title_justify="left")
    for column in ("key", "name", "GiB", "bf16", "GB/s", "TFLOPS"):
        table.add_column(column, no_wrap=column in ("key", "GiB"))
    for g in rows:
        table.add_row(g.key, g.name, f"{g.total_bytes / (1 << 30):.2f}", "yes" if g.bf16 else "no", f"{g.bandwidth_gbps:g}", f"{g.bf16_tflops:g}")
    console = Console()
    console.print(table)
    console.print("Memory is the total the driver reports (GiB = 2^30 bytes); aliases are in --json.")
