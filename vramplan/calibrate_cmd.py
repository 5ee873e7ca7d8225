"""`vramplan calibrate`: measure, store, fit, and report the error table."""

from __future__ import annotations

import json
import shlex
import sys

import click

from .planner.methods import METHOD_KEYS
from .cli import _split, cli, options_from_kwargs, run_options
from .planner.errors import ConfigError
from .calibrate.matrix import DEVICES, PRESETS
from .vlm_cmd import VLM_FLAGS, vlm_options, vlm_requested


@cli.command()
@click.option("--device", type=click.Choice(DEVICES), default=None, help="Where to measure: a GPU, the CPU (small probe models), or full-size fake-tensor traces [default: cuda when available, else cpu].")
@click.option("--preset", type=click.Choice(PRESETS), default="quick", show_default=True, help="Matrix size.")
@click.option("--models", default=None, help="Comma-separated models to keep from the matrix (probe names on CPU, catalog ids on CUDA).")
@click.option("--methods", default=None, help="Comma-separated methods to keep from the matrix.")
@click.option("--where", "where", multiple=True, help="Keep matrix runs whose setting has this value, FIELD=VALUE, repeatable (e.g. --where packing=true).")
@click.option("--steps", type=int, default=3, show_default=True, help="Training steps per measured run (steady state from step 2).")
@click.option("--db", type=click.Path(dir_okay=False), default=None, help="Measurement store [default: the user data directory].")
@click.option("--redo", is_flag=True, help="Measure again the configs the store already holds (by default a re-run skips them, so a killed matrix finishes where it stopped).")
@click.option("--report", is_flag=True, help="Print the error table from the store instead of measuring.")
@click.option("--current", is_flag=True, help="With --report: re-estimate every stored run with this version's model.")
@click.option("--trace", is_flag=True, help="Trace one config at full size on fake tensors (needs --model).")
@click.option("--model", "-m", default=None, help="Model for --trace (anything `estimate --model` takes).")
@click.option("--method", type=click.Choice(METHOD_KEYS), default="qlora", show_default=True, help="Method for --trace.")
@run_options
@click.option("--json", "as_json", is_flag=True, help="JSON output (--report: a list of rows; --trace: one object).")
@click.option("--html", "html_path", type=click.Path(), default=None, help="With --report: also write a self-contained HTML page (estimated vs measured, the error tables).")
@vlm_options
def calibrate(device, preset, models, methods, where, steps, db, redo, report, current, trace, model, method, as_json, html_path, **kwargs):
    """Measure real peak memory, store it beside the estimate, fit corrections, report the error.

    \b
    Example:
      vramplan calibrate --device cpu --preset quick --db runs.db && vramplan calibrate --report --db runs.db
    """
    if steps < 2:
        raise ConfigError("--steps must be at least 2: the steady state starts at step 2")
    if html_path is not None and not report:
        raise ConfigError("--html goes with --report (the page shows the store's runs)")
    allow_long = kwargs.pop("allow_long_context")
    vlm_values = {name: kwargs.pop(name) for name in VLM_FLAGS}
    if vlm_requested(vlm_values):  # the stage and images of one traced VLM config
        if not trace:
            raise ConfigError("--stage, --images, --image-size, --max-pixels, --vision, --projector and --quantize-vision go with --trace (one VLM config)")
        if vlm_values["schedule"]:
            raise ConfigError("--schedule: --trace traces one stage at a time; give --stage 1 or --stage 2")
    if report:
        _report(db, as_json, current, html_path)
    elif trace:
        _trace(model, method, options_from_kwargs(kwargs), as_json, allow_long, vlm_values)
    else:
        _run_matrix(device, preset, models, methods, steps, db, redo, where)


def _report(db, as_json, current=False, html_path=None):
    from .calibrate.store_check import check_store
    from .calibrate.workflow import error_report
    from .preflight import check_html

    check_html(html_path)
    check_store(db, write=False, must_exist=True)  # a report never creates a store
    report = error_report(db, current, allow_empty=as_json and html_path is None)
    if as_json:
        click.echo(json.dumps(report.rows, indent=2))
    else:
        from rich.console import Console

        from .reports.calibration_table import render_error_table

        render_error_table(Console(), report.summary, report.excluded)
        from .calibrate.family_report import family_summaries, model_types
        from .calibrate.store import Store
        from .reports.family_table import render_family_table

        with Store.open(db) as store:  # the table per model family (issue 13): which config each run measured
            render_family_table(Console(), family_summaries(report.rows, model_types(store.runs())))
    if html_path is not None:
        from .commands import wrote
        from .reports.html_report import write_report
        from .reports.html_sections import trust_page

        wrote(html_path, write_report(html_path, trust_page(db, current), "--html"), err=as_json)


def _trace(model, method, options, as_json, allow_long=False, vlm_values=None):
    if not model:
        raise ConfigError("--trace needs --model (e.g. --model 8b)")
    from . import preflight
    from .calibrate.workflow import trace
    from .commands import build_run
    from .quiet import quiet_libraries

    run = build_run(options, method, None)
    checks = preflight.check_planned(preflight.resolve_checked(model), run, (method,), allow_long, "seq_len" in preflight.typed_flags())
    if not as_json:
        checks.echo()
    quiet_libraries(lambda message: click.echo(message, err=True))
    vlm = None
    if vlm_values and vlm_requested(vlm_values):
        from .vlm_cmd import vlm_run_from_flags

        vlm = vlm_run_from_flags(vlm_values)
    out = trace(model, checks.run, vlm)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    from rich.console import Console

    from .reports.calibration_table import render_trace

    render_trace(Console(), out)


def _run_matrix(device, preset, models, methods, steps, db, redo=False, where=()):
    from rich.progress import Progress

    from .calibrate.store_check import check_store
    from .calibrate.workflow import resolve_device, run_matrix, select_matrix
    from .quiet import quiet_libraries

    check_store(db, write=True)  # before torch loads and before the first run: not after an hour of measuring
    device = resolve_device(device)
    matrix = select_matrix(device, preset, _split((models,)) if models else (), _split((methods,)) if methods else (), tuple(where))
    quiet_libraries(lambda message: click.echo(message, err=True))
    command = "vramplan " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    with Progress() as progress:
        task = progress.add_task("calibrating", total=len(matrix))
        result = run_matrix(
            matrix, device, steps, db, command,
            before=lambda name, run: progress.update(task, description=f"{name} {run.method} b{run.batch} s{run.seq_len}"),
            after=lambda record: progress.advance(task),
            redo=redo, on_skip=lambda name, run: progress.advance(task),
        )
    counts, fitted = result.counts, result.corrections
    click.echo(f"{result.runs} runs: {counts['ok']} ok, {counts['oom']} oom, {counts['error']} error; stored in {result.store_path}")
    if result.skipped:
        click.echo(f"{result.skipped} configs already measured with this stack: skipped (--redo measures them again)")
    click.echo(f"fitted: activation scale {fitted.activation_scale:.3f}, allocator slack {fitted.allocator_slack_ratio:.3f}, "
               f"outside allocator {fitted.cuda_context_bytes / 2**20:.0f} MiB")
    click.echo("see the error table: vramplan calibrate --report" + (f" --db {db}" if db else ""))
