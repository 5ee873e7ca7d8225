"""The VLM flags of `vramplan estimate`, and the estimate of a vision-language model."""

from __future__ import annotations

import json

import click

from .planner.errors import ConfigError
from .planner.vision.run import PROJECTOR_STRATEGIES, SCHEDULES, VISION_STRATEGIES

from .planner.methods import DEFAULT_METHODS, METHODS

# compared when no --method is given: the default methods whose adapter the VLM planner places
VLM_DEFAULT_METHODS = tuple(key for key in DEFAULT_METHODS if METHODS[key].adapter is not None and METHODS[key].adapter.uses_rank)
VLM_FLAGS = ("stage", "schedule", "images", "image_size", "max_pixels", "vision", "projector", "quantize_vision")


def vlm_options(func):
    """--stage, --schedule, --images, --image-size, --max-pixels, --vision, --projector, --quantize-vision."""
    options = [
        click.option("--stage", type=click.Choice(["1", "2"]), default=None, help="VLM training stage: 1 trains the projector only (LLM and vision frozen), 2 the projector plus the LLM by --method [default: 2]."),
        click.option("--schedule", type=click.Choice(SCHEDULES), default=None, help="VLM: plan both LLaVA-style stages and report each and the larger peak."),
        click.option("--images", type=int, default=None, help="VLM: images per example [default: 1]."),
        click.option("--image-size", "image_size", multiple=True, help="VLM: image size WxH in pixels; repeat for a mix (cycled over --images) [default: the family's, e.g. 448x448]."),
        click.option("--max-pixels", type=int, default=None, help="VLM (Qwen-VL): the processor's max_pixels; larger images are scaled down to it [default: the checkpoint's, 12845056]."),
        click.option("--vision", type=click.Choice(VISION_STRATEGIES), default=None, help="VLM: vision tower frozen, LoRA on its blocks' Linears (same rank), or fully trained [default: freeze]."),
        click.option("--projector", type=click.Choice(PROJECTOR_STRATEGIES), default=None, help="VLM: train or freeze the projector [default: train]."),
        click.option("--quantize-vision", is_flag=True, default=False, help="VLM with QLoRA/QDoRA: the frozen vision tower in NF4 too (default: only the LLM's decoder Linears)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def vlm_requested(values: dict) -> bool:
    return any(values.get(name) not in (None, (), False) for name in VLM_FLAGS)


def vlm_run_from_flags(values: dict):
    from .planner.vision.run import VlmRun
    from .planner.vision.tokens import parse_image_size

    return VlmRun(
        stage=int(values.get("stage") or 2),
        images=1 if values.get("images") is None else values["images"],
        image_sizes=tuple(parse_image_size(text) for text in values.get("image_size") or ()),
        max_pixels=values.get("max_pixels"),
        vision=values.get("vision") or "freeze",
        projector=values.get("projector") or "train",
        quantize_vision=bool(values.get("quantize_vision")),
    )


def estimate_vlm_command(resolved, gpu_spec, base_run, methods, corrections, values: dict, as_json: bool) -> None:
    """Estimate each method (or both stages with --schedule two-stage) and print the table or JSON."""
    from dataclasses import replace

    from .planner.vision import vlm_spec_for
    from .planner.vlm_estimate import estimate_schedule, estimate_vlm

    spec = vlm_spec_for(resolved)
    vlm = vlm_run_from_flags(values)
    if values.get("schedule") and values.get("stage"):
        raise ConfigError("give either --stage or --schedule two-stage, not both")
    if vlm.quantize_vision and not any(replace(base_run, method=m).method_record.quantizes_base for m in methods):
        raise ConfigError("--quantize-vision goes with a 4-bit method (--method qlora or qdora)")
    estimates = []
    for method in methods:
        run = replace(base_run, method=method)
        if values.get("schedule"):
            estimates += estimate_schedule(spec, run, vlm, gpu_spec, corrections)
        else:
            estimates.append(estimate_vlm(spec, run, vlm, gpu_spec, corrections))
    if as_json:
        from .reports.vlm_report import vlm_document

        click.echo(json.dumps(vlm_document(estimates, resolved.note, values.get("schedule")), indent=2))
        return
    from rich.console import Console

    from .reports.vlm_report import render_vlm

    render_vlm(Console(), estimates, resolved.note)


def vlm_catalog_rows() -> list[dict]:
    """`vramplan models`: the built-in vision-language models, per component."""
    from .planner.catalog.vlm_models import VLM_CONFIGS
    from .planner.vision import vlm_spec_from_config

    rows = []
    for hub_id, entry in VLM_CONFIGS.items():
        spec = vlm_spec_from_config(entry["config"], hub_id, entry.get("processor"))
        rows.append({
            "id": hub_id, "aliases": list(entry["aliases"]), "model_type": spec.model_type, "base_params": spec.params,
            "kind": "vlm", "family": spec.family.title,
            "components": {"vision": spec.vision.params, "projector": spec.projector.params, "llm": spec.decoder.base_params},
        })
    return rows


def render_vlm_catalog(console, rows: list[dict]) -> None:
    """The second table of `vramplan models`: each VLM's params by component."""
    from rich.table import Table

    table = Table(title="Vision-language models (vision tower + projector + LLM; estimate them with --stage, --image-size, ...)", title_justify="left")
    table.add_column("id", overflow="fold")
    table.add_column("alias", no_wrap=True)
    table.add_column("family", no_wrap=True)
    for column in ("params", "vision", "projector", "LLM"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        parts = row["components"]
        table.add_row(row["id"], row["aliases"][0], row["family"], f"{row['base_params'] / 1e9:.2f}B", f"{parts['vision'] / 1e6:,.1f}M",
                      f"{parts['projector'] / 1e6:,.1f}M", f"{parts['llm'] / 1e9:.2f}B")
    console.print(table)
