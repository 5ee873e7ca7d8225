"""`vramplan calibrate`: measure, store, fit, and report the error table."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import replace

import click

from .cli import _split, cli, options_from_kwargs, run_options
from .planner.errors import ConfigError


def _open_store(db):
    from .calibrate.store import Store

    return Store.open(db)


def _device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "trace":
        return device
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible to torch; use --device cpu")
    return device


@cli.command()
@click.option("--device", type=click.Choice(("cuda", "cpu", "trace")), default=None, help="Where to measure: a GPU, the CPU (small probe models), or full-size fake-tensor traces [default: cuda when available, else cpu].")
@click.option("--preset", type=click.Choice(("quick", "standard", "full")), default="quick", show_default=True, help="Matrix size.")
@click.option("--models", default=None, help="Comma-separated models to keep from the matrix (probe names on CPU, catalog ids on CUDA).")
@click.option("--methods", default=None, help="Comma-separated methods to keep from the matrix.")
@click.option("--steps", type=int, default=3, show_default=True, help="Training steps per measured run (steady state from step 2).")
@click.option("--db", type=click.Path(dir_okay=False), default=None, help="Measurement store [default: the user data directory].")
@click.option("--report", is_flag=True, help="Print the error table from the store instead of measuring.")
@click.option("--current", is_flag=True, help="With --report: re-estimate every stored run with this version's model.")
@click.option("--trace", is_flag=True, help="Trace one config at full size on fake tensors (needs --model).")
@click.option("--model", "-m", default=None, help="Model for --trace (anything `estimate --model` takes).")
@click.option("--method", default="qlora", show_default=True, help="Method for --trace.")
@run_options
@click.option("--json", "as_json", is_flag=True, help="JSON output (--report: a list of rows; --trace: one object).")
@click.option("--html", "html_path", type=click.Path(), default=None, help="With --report: also write a self-contained HTML page (estimated vs measured, the error tables).")
def calibrate(device, preset, models, methods, steps, db, report, current, trace, model, method, as_json, html_path, **kwargs):
    """Measure real peak memory, store it beside the estimate, fit corrections, report the error.

    \b
    Example:
      vramplan calibrate --device cpu --preset quick --db runs.db && vramplan calibrate --report --db runs.db
    """
    if steps < 2:
        raise ConfigError("--steps must be at least 2: the steady state starts at step 2")
    if html_path is not None and not report:
        raise ConfigError("--html goes with --report (the page shows the store's runs)")
    if report:
        _report(db, as_json, current, html_path)
    elif trace:
        _trace(model, method, options_from_kwargs(kwargs), as_json)
    else:
        _run_matrix(_device(device), preset, models, methods, steps, db)


def _report(db, as_json, current=False, html_path=None):
    from .calibrate.report import error_rows, summarize

    if html_path is not None:
        from .reports.html_report import check_out_path

        check_out_path(html_path, "--html")
    with _open_store(db) as store:
        records = store.runs()
    rows = error_rows(records, current=current)
    if not rows and (html_path is not None or not as_json):
        raise ConfigError(f"the store {db or 'at the default path'} holds no runs yet: run `vramplan calibrate` first")
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        from rich.console import Console

        from .reports.calibration_table import render_error_table

        excluded: dict[str, int] = {}
        for row in rows:
            if row["outcome"] != "ok":
                excluded[row["outcome"]] = excluded.get(row["outcome"], 0) + 1
        render_error_table(Console(), summarize(rows), excluded)
    if html_path is not None:
        from .commands import wrote
        from .reports.html_report import write_report
        from .reports.html_sections import trust_page

        wrote(html_path, write_report(html_path, trust_page(db, current), "--html"), err=as_json)


def _trace(model, method, options, as_json):
    if not model:
        raise ConfigError("--trace needs --model (e.g. --model 8b)")
    from .calibrate.runner import measure, tensor_peak_estimate
    from .commands import build_run
    from .planner.catalog import resolve_model
    from .planner.estimator import estimate

    resolved = resolve_model(model)
    run = build_run(options, method, None)  # device_kind cuda: the trace imitates the GPU's code paths
    predicted = estimate(resolved.spec, run).breakdown
    estimated = tensor_peak_estimate(predicted)
    result = measure("trace", resolved.config, run, steps=2)
    measured = result["steady_peak_bytes"]
    out = {
        "model": resolved.spec.name,
        "method": run.method,
        "statistic": "peak live tensor bytes of a steady-state step on fake tensors (the analogue of max_memory_allocated)",
        "measured_bytes": measured,
        "estimated_bytes": estimated,
        "error_pct": 100.0 * (estimated - measured) / measured,
        "components": predicted.at_peak(),
        "traced_categories": result.get("breakdown", {}),
        "traced_phase_peak_bytes": result.get("phase_peak_bytes", {}),
        "seconds": result.get("seconds"),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in run.__dict__.items()},
    }
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    from rich.console import Console

    from .reports.calibration_table import render_trace

    render_trace(Console(), out)


def _run_matrix(device, preset, models, methods, steps, db):
    from rich.progress import Progress

    from .calibrate.environment import environment
    from .calibrate.fit import fit_corrections, held_out_worst_pct
    from .calibrate.matrix import calibration_matrix
    from .calibrate.runner import measure_and_store
    from .planner.catalog import gpu_for_device_name

    matrix = calibration_matrix(device, preset)
    if models:
        keep = set(_split((models,)))
        matrix = [(m, r) for m, r in matrix if m in keep]
    if methods:
        keep = set(_split((methods,)))
        matrix = [(m, r) for m, r in matrix if r.method in keep]
    if not matrix:
        raise ConfigError("--models/--methods left nothing to measure in this preset")
    env = environment("cpu" if device == "trace" else device)
    if device == "trace":
        env["device_name"] = "fake-cuda-trace"
    gpu = gpu_for_device_name(env["device_name"]) if device == "cuda" else None
    command = "vramplan " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    counts = {"ok": 0, "oom": 0, "error": 0}
    with _open_store(db) as store, Progress() as progress:
        task = progress.add_task(f"calibrating on {env['device_name']}", total=len(matrix))
        for model_name, run in matrix:
            progress.update(task, description=f"{model_name} {run.method} b{run.batch} s{run.seq_len}")
            record = measure_and_store(store, model_name, run, device, env, gpu, steps, command)
            counts[record.outcome] += 1
            progress.advance(task)
        records = store.runs(source=device, device_name=env["device_name"])
        records = [r for r in records if r.stack == env["stack"]]
        corrections = replace(fit_corrections(records, f"{env['device_name']} / {env['stack']}"), held_out_worst_pct=held_out_worst_pct(records))
        store.add_calibration(
            env["device_name"], env["stack"], corrections.__dict__, [r.id for r in records if r.outcome == "ok"],
            {"runs": len(records)}, gpu_key=gpu.key if gpu else None,
        )
    click.echo(f"{len(matrix)} runs: {counts['ok']} ok, {counts['oom']} oom, {counts['error']} error; stored in {store.path}")
    click.echo(f"fitted: activation scale {corrections.activation_scale:.3f}, allocator slack {corrections.allocator_slack_ratio:.3f}, "
               f"outside allocator {corrections.cuda_context_bytes / 2**20:.0f} MiB")
    click.echo("see the error table: vramplan calibrate --report" + (f" --db {db}" if db else ""))
