"""`vramplan report`: one self-contained HTML file comparing methods, settings, models and GPUs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from .planner.methods import DEFAULT_METHODS, METHODS
from .cli import _split, cli, options_from_kwargs, run_options, transformers_version_option
from .planner.errors import ConfigError
from .planner.vision.run import VISION_STRATEGIES


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
@click.option("--image-size", "image_size", multiple=True, help="VLM: image size WxH in pixels; repeat for a mix (cycled over --images) [default: the family's].")
@click.option("--images", type=int, default=None, help="VLM: images per example [default: 1].")
@click.option("--max-pixels", type=int, default=None, help="VLM (Qwen-VL): the processor's max_pixels [default: the checkpoint's].")
@click.option("--vision", type=click.Choice(VISION_STRATEGIES), default=None, help="VLM: the vision tower in stage 2: freeze, lora or full [default: freeze].")
@transformers_version_option
def report(model, gpu_keys, methods, db, run_dir, out, image_size, images, max_pixels, vision, transformers_version, **kwargs):
    """Write an HTML report: methods side by side, setting sweeps, a fit matrix, trust, and a run.

    For a vision-language model: each stage's components (vision tower, projector, LLM) against
    every GPU, the resolution sweep and, with --run, both stages of a run.

    \b
    Example:
      vramplan report --model 8b --gpu t4 --gpu l4 --out report.html
      vramplan report --model qwen2-vl-7b --gpu t4 --gpu l4 --out vlm.html
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
    resolved = preflight.resolve_checked(model)
    vlm_values = {"image_size": image_size, "images": images, "max_pixels": max_pixels, "vision": vision}
    from .planner.vision import is_vlm_config

    if is_vlm_config(resolved.config) or any(value not in (None, ()) for value in vlm_values.values()):
        from .vlm_cmd import VLM_DEFAULT_METHODS
        from .vlm_report_cmd import vlm_report

        chosen = parse_methods(methods, default=VLM_DEFAULT_METHODS)
        run = replace(build_run(options, chosen[0], _reference_gpu(gpus)), transformers_version=transformers_version)
        html = vlm_report(resolved, model, gpus, run, chosen, vlm_values, db, run_dir)
        return wrote(out, write_report(out, html))
    chosen = parse_methods(methods)
    run = replace(build_run(options, chosen[0], _reference_gpu(gpus)), transformers_version=transformers_version)
    if db is not None and Path(db).exists():  # a missing one: build_report says so
        from .calibrate.store_check import check_store

        check_store(db, write=False)
    checks = preflight.check_planned(resolved, run, chosen, allow_long, "seq_len" in preflight.typed_flags())
    checks.echo()
    run = checks.run
    html = build_report(model, keys, run, chosen, db_path=db, run_dir=run_dir)
    wrote(out, write_report(out, html))
