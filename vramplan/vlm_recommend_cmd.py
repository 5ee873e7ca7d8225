"""`vramplan recommend` for a vision-language model: the two-stage plan, its plan file and page."""

from __future__ import annotations

import json

import click

from .planner.errors import ConfigError

# recommend flags that speak of text-model searches only
TEXT_ONLY = {"dataset": "--dataset", "from_files": "--from", "export_kind": "--export", "top": "--top",
             "allow_long": "--allow-long-context"}


def vlm_spec_of(resolved, model: str):
    """The VlmSpec of `--model`; a local model directory brings its own processor's pixel bounds.

    transformers 5 writes Qwen-VL's min/max_pixels as `size.shortest_edge/longest_edge` in
    preprocessor_config.json (older files: `min_pixels`/`max_pixels`); the token count follows them.
    """
    from pathlib import Path

    from .planner.vision import vlm_spec_for, vlm_spec_from_config

    path = Path(str(model)).expanduser()
    file = (path if path.is_dir() else path.parent) / "preprocessor_config.json"
    if not path.exists() or not file.is_file():
        return vlm_spec_for(resolved)
    try:
        values = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"--model {model}: {file} is not readable JSON; fix or remove it") from None
    size = values.get("size") if isinstance(values.get("size"), dict) else {}
    processor = {key: int(value) for key, value in (("min_pixels", values.get("min_pixels") or size.get("shortest_edge")),
                                                    ("max_pixels", values.get("max_pixels") or size.get("longest_edge")))
                 if isinstance(value, int) and not isinstance(value, bool) and value > 0}
    vlm_spec_for(resolved)  # a text-only model with image flags: the same one-line error as the catalog path
    return vlm_spec_from_config(resolved.config, resolved.spec.name, processor, source="config.json")


def check_vlm_flags(values: dict, typed: set[str]) -> None:
    """Refuse, in one line, the recommend flags a VLM plan cannot honour.

    Raises:
        ConfigError: naming the flag and what to do instead.
    """
    given = [flag for name, flag in TEXT_ONLY.items() if name in typed and values.get(name) not in (None, (), False)]
    if given:
        raise ConfigError(f"{', '.join(given)}: not for a vision-language model yet; a VLM plan takes --dataset-size N, "
                          "--image-size WxH, --images, --max-pixels and --seq-len")
    if values.get("gpus", 1) != 1:
        raise ConfigError(f"--gpus {values['gpus']}: the VLM plan is for one GPU; drop --gpus or pick a bigger --gpu")
    if values.get("goal", "quality") != "quality":
        raise ConfigError(f"--goal {values['goal']}: a VLM plan follows the data-scale table (--goal quality); drop --goal")


def recommend_vlm_command(resolved, gpu_spec, values: dict, out, html_path, as_json: bool, planned_model: str) -> None:
    """Plan both stages, print them (or their JSON), write the plan file and the page when asked."""
    from .commands import parse_methods
    from .planner.margin import margin_ratio_for
    from .planner.vision.tokens import parse_image_size
    from .planner.vision.run import VlmRun
    from .planner.vlm_advisor import VLM_METHODS, recommend_vlm
    from .reports.vlm_report import vlm_advice_document

    spec = vlm_spec_of(resolved, planned_model)
    images = 1 if values.get("images") is None else values["images"]
    if images < 1:
        raise ConfigError(f"--images must be 1 or more for a VLM plan, got {images}")
    vlm = VlmRun(images=images, image_sizes=tuple(parse_image_size(text) for text in values.get("image_size") or ()),
                 max_pixels=values.get("max_pixels"))
    corrections = None
    if gpu_spec.key != "custom" or values.get("db") is not None:
        from .calibrate.lookup import corrections_for

        corrections = corrections_for(gpu_spec, values.get("db"))
    ratio, margin_note = margin_ratio_for(corrections)
    methods = parse_methods(values.get("methods") or (), default=VLM_METHODS)
    advice = recommend_vlm(spec, gpu_spec, vlm, values.get("dataset_size"), values.get("seq_len"), corrections, ratio, methods,
                            values.get("transformers_version"))
    document = vlm_advice_document(advice, resolved.note, margin_note)
    if out is not None:
        from .planner.plan_file import plan_document, write_plan
        from .reports.vlm_report import plan_stages, stage_training

        two = advice.stages[-1]
        reasons = [*advice.reasons, *two.reasons]
        write_plan(out, plan_document(planned_model, document["gpu"], two.plan.run, None, training=stage_training(advice),
                                      goal="quality", reasons=reasons, stages=plan_stages(advice)))
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        from rich.console import Console

        from .reports.vlm_report import render_vlm_advice

        render_vlm_advice(Console(), document)
        if out is not None:
            click.echo(f"plan written to {out} (both stages; `vramplan run --plan {out}` runs them)")
    if html_path is not None:
        from .commands import wrote
        from .reports.html_report import write_report
        from .reports.vlm_html import vlm_advice_page

        wrote(html_path, write_report(html_path, vlm_advice_page(advice, document), "--html"), err=as_json)


# flags of `estimate` that leave a VLM plan's stages as written
PLAN_NEUTRAL = {"plan_path", "model", "gpu", "gpu_mem", "db", "as_json"}


def estimate_plan_stages(plan_path, model: str, resolved, gpu_spec, corrections, as_json: bool) -> bool:
    """`estimate --plan` on a VLM plan: each stage as written (its run, images and components).

    Returns False (nothing printed) when the plan has no stages or a run/VLM flag was given: the
    flags then go over the stage-2 config, as for any plan.
    """
    from . import preflight
    from .planner.plan_file import read_plan, read_vlm_stages
    from .planner.vlm_estimate import estimate_vlm

    label = f"--plan {plan_path}"
    stages = read_vlm_stages(read_plan(plan_path, label), label)
    if not stages or preflight.typed_flags() - PLAN_NEUTRAL:
        return False
    spec = vlm_spec_of(resolved, model)
    estimates = [estimate_vlm(spec, stage.run, stage.vlm, gpu_spec, corrections) for stage in stages]
    if as_json:
        from .reports.vlm_report import vlm_document

        click.echo(json.dumps(vlm_document(estimates, resolved.note, "two-stage" if len(estimates) > 1 else None), indent=2))
    else:
        from rich.console import Console

        from .reports.vlm_report import render_vlm

        render_vlm(Console(), estimates, resolved.note)
    return True
