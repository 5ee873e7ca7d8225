"""`vramplan report`: one self-contained HTML file comparing methods, settings, models and GPUs."""

from __future__ import annotations

from pathlib import Path

import click

from .planner.methods import DEFAULT_METHODS, METHODS
from .cli import _split, cli, options_from_kwargs, run_options
from .planner.errors import ConfigError


def _reference_gpu(gpus):
    """The GPU that sets the default precision: the first without bf16 (fp16 for all), else the first."""
    return next((gpu for gpu in gpus if not gpu.bf16), gpus[0])


@cli.command()
@click.option("--model", "-m", required=True, help="Catalog id or alias, size (8b), or a local config.json / model directory.")
@click.option("--gpu", "-g", "gpu_keys", multiple=True, required=True, help="GPU key, repeated or comma-separated (t4, l4, a100-80gb, ...); see `vramplan gpus`.")
@click.option("--method", "methods", multiple=True, help=f"Methods to compare, comma-separated or repeated: {', '.join(METHODS)} [default: {','.join(DEFAULT_METHODS)}].")
@run_options
@click.option("--db", type=click.Path(dir_okay=False), default=None, help="Measurement store: its calibration for each GPU, and a trust section from its runs.")
@click.option("--run", "run_dir", type=click.Path(), default=None, help="A `vramplan run` output directory: add a Run section (its marker; with --db also its loss curve, tokens/s and measured peak).")
@click.option("--out", "-o", required=True, type=click.Path(), help="HTML file to write (self-contained: opens offline).")
def report(model, gpu_keys, methods, db, run_dir, out, **kwargs):
    """Write an HTML report: methods side by side, setting sweeps, a fit matrix, trust, and a run.

    \b
    Example:
      vramplan report --model 8b --gpu t4 --gpu l4 --out report.html
    """
    from . import preflight
    from .commands import build_run, parse_methods, wrote
    from .planner.catalog import resolve_gpu
    from .reports.html_report import build_report, write_report

    preflight.check_html(out, "--out")  # before any work: the page is the point of the command
    allow_long = kwargs.pop("allow_long_context")
    options = options_from_kwargs(kwargs)
    keys = _split(gpu_keys)
    if not keys:
        raise ConfigError("--gpu is empty; give a GPU key such as --gpu t4 (see `vramplan gpus`)")
    gpus = [resolve_gpu(key) for key in keys]
    chosen = parse_methods(methods)
    run = build_run(options, chosen[0], _reference_gpu(gpus))
    if db is not None and Path(db).exists():  # a missing one: build_report says so
        from .calibrate.store_check import check_store

        check_store(db, write=False)
    checks = preflight.check_planned(preflight.resolve_checked(model), run, chosen, allow_long, "seq_len" in preflight.typed_flags())
    checks.echo()
    run = checks.run
    html = build_report(model, keys, run, chosen, db_path=db, run_dir=run_dir)
    wrote(out, write_report(out, html))
