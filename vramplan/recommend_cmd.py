"""`vramplan recommend`: the best config that fits, with reasons."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .cli import cli, transformers_version_option
from .interop_cmd import export_methods, from_option
from .planner.interop import EXPORTS
from .planner.errors import ConfigError
from .planner.methods import METHOD_KEYS
from .planner.advisor import GOALS


@cli.command()
@click.option("--model", "-m", default=None, help="[required unless --from] Catalog id, alias, size (8b) or a local config.json / model directory.")
@click.option("--gpu", "-g", default=None, help="GPU key (see `vramplan gpus`).")
@click.option("--gpu-mem", default=None, help="Any other GPU by memory, e.g. 22GiB.")
@click.option("--dataset", type=click.Path(path_type=Path), default=None, help="Dataset (JSONL, JSON, CSV, Parquet, or a datasets save_to_disk folder): sets the size and the sequence length (p99 of its token lengths).")
@click.option("--dataset-size", type=int, default=None, help="Number of training examples (when there is no --dataset).")
@click.option("--seq-len", "-s", type=int, default=None, help="Fix the sequence length [default: from --dataset, else 2048].")
@click.option("--allow-long-context", "allow_long", is_flag=True, help="Allow a --seq-len beyond the model's context window (refused otherwise; a dataset's p99 is cut to it).")
@click.option("--goal", type=click.Choice(GOALS), default="quality", show_default=True)
@click.option("--gpus", type=int, default=1, show_default=True, help="GPUs of this kind to use: each config gets the least sharding that fits (DDP, ZeRO-2, FSDP full shard).")
@click.option("--method", "methods", multiple=True, help=f"Methods to consider, comma-separated or repeated: {', '.join(METHOD_KEYS)} [default: all].")
@click.option("--top", type=int, default=5, show_default=True, help="How many alternatives to show.")
@click.option("--db", type=click.Path(dir_okay=False), default=None, help="Measurement store whose calibration to use.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the best config as a plan file (.json, .yaml) for `run --plan` and `estimate --plan`; with --export, the tool's config.")
@from_option
@click.option("--export", "export_kind", type=click.Choice(EXPORTS), default=None, help="Write the best config for another tool to --out instead of a plan file: trl (trl sft --config), axolotl, llama-factory, accelerate.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (schema in the README).")
@click.option("--html", "html_path", type=click.Path(path_type=Path), default=None, help="Also write a self-contained HTML page: the recommendation, its reasons and the alternatives.")
@click.option("--image-size", "image_size", multiple=True, help="VLM: image size WxH in pixels; repeat for a mix (cycled over --images) [default: the family's, e.g. 448x448].")
@click.option("--images", type=int, default=None, help="VLM: images per example [default: 1].")
@click.option("--max-pixels", type=int, default=None, help="VLM (Qwen-VL): the processor's max_pixels to start from; the plan may lower it to fit, and says what that costs [default: the checkpoint's].")
@transformers_version_option
def recommend(model, gpu, gpu_mem, dataset, dataset_size, seq_len, allow_long, goal, gpus, methods, top, db, out, from_files, export_kind, as_json, html_path,
              image_size, images, max_pixels, transformers_version):
    """Recommend the best fine-tuning config that fits a GPU, with the reason for each choice.

    For a vision-language model: a two-stage plan (projector warm-up, then projector + LLM)
    from the data-scale table, fitted to the GPU at the image size.

    \b
    Example:
      vramplan recommend --model 8b --gpu t4 --dataset-size 5000 --out plan.yaml
      vramplan recommend --model qwen2-vl-7b --gpu t4 --dataset-size 5000 --image-size 448x448
    """
    from . import preflight
    from .commands import parse_methods, resolve_gpu_flags
    from .planner.advisor import recommend as advise
    from .planner.margin import margin_ratio_for

    if html_path is not None:
        from .reports.html_report import check_out_path

        check_out_path(html_path, "--html")
    from_lines, fixed = [], {}
    if from_files:
        from .interop_cmd import recommend_inputs

        model, seq_len, gpus, fixed, from_lines = recommend_inputs(from_files, model, seq_len, gpus)
    elif not model:
        raise ConfigError("--model is required (or --from FILE)")
    if export_kind is not None and out is None:
        raise ConfigError(f"--export {export_kind} needs --out FILE (where to write the {export_kind} config)")
    gpu_spec = resolve_gpu_flags(gpu, gpu_mem)
    if gpu_spec is None:
        raise ConfigError("recommend needs a GPU: --gpu KEY (see `vramplan gpus`) or --gpu-mem SIZE")
    for flag, value in (("--seq-len", seq_len), ("--dataset-size", dataset_size), ("--top", top), ("--gpus", gpus)):
        if value is not None and value <= 0:
            raise ConfigError(f"{flag} must be greater than 0, got {value}")
    if dataset is not None and dataset_size is not None:
        raise ConfigError("give either --dataset or --dataset-size, not both")
    resolved = preflight.resolve_checked(model)
    preflight.check_plan_out(out)
    from .planner.vision import is_vlm_config

    if is_vlm_config(resolved.config) or image_size or images is not None or max_pixels is not None:
        from .vlm_recommend_cmd import check_vlm_flags, recommend_vlm_command

        values = dict(dataset=dataset, from_files=from_files, export_kind=export_kind, top=top, allow_long=allow_long, gpus=gpus, goal=goal,
                      image_size=image_size, images=images, max_pixels=max_pixels, dataset_size=dataset_size, seq_len=seq_len, methods=methods, db=db,
                      transformers_version=transformers_version)
        check_vlm_flags(values, preflight.typed_flags())
        return recommend_vlm_command(resolved, gpu_spec, values, out, html_path, as_json, _planned_model(model, resolved))
    if dataset is not None:
        preflight.check_data_file(dataset, "--dataset")
    window, extra = preflight.recommend_window(resolved, seq_len, allow_long), {}
    if dataset is not None:
        from .planner.dataset_stats import dataset_stats

        local = Path(model)
        tokenizer_dir = (local if local.is_dir() else local.parent) if local.exists() else None
        stats = dataset_stats(dataset, tokenizer_dir)
        dataset_size = stats.examples
        seq_len = seq_len or preflight.within(stats.seq_len(), window, allow_long, extra, "the dataset's p99")
        extra["dataset"] = (
            f"dataset {dataset.name}: {stats.examples:,} examples, tokens p50 {stats.p50_tokens:,} / p99 {stats.p99_tokens:,} "
            f"({stats.counted_with}); seq-len {seq_len} truncates {stats.truncated(seq_len):,} of them; "
            f"padded to {seq_len} tokens, {stats.padding_share(seq_len):.0%} of each step is padding (--packing on `run` packs rows instead)"
        )
    seq_len = seq_len or preflight.within(2048, window, allow_long, extra, "the default")
    corrections = None
    if gpu_spec.key != "custom" or db is not None:
        from .calibrate.lookup import corrections_for

        corrections = corrections_for(gpu_spec, db)
    ratio, margin_note = margin_ratio_for(corrections)
    chosen = export_methods(export_kind, parse_methods(methods, default=METHOD_KEYS))
    if transformers_version is not None:  # every candidate is modelled for that version's memory paths
        fixed = {**fixed, "transformers_version": transformers_version}
    recs = advise(resolved.spec, gpu_spec, seq_len, goal, dataset_size, corrections, ratio, methods=chosen, top=top, gpus=gpus, fixed=fixed)
    from .reports.advice import advice_document, config_of

    document = advice_document(recs, resolved.note, goal, margin_note, extra)
    if out is not None:
        from .planner.plan_file import plan_document, write_plan

        best = recs[0]
        plan = plan_document(_planned_model(model, resolved), document["gpu"], best.run, best.parallel, training=config_of(best), goal=goal, reasons=best.reasons)
        if export_kind is not None:
            from .interop_cmd import write_export

            from_lines += [f"{export_kind}: {note}" for note in write_export(export_kind, out, plan, dataset, from_files)]
        else:
            write_plan(out, plan)
    for line in from_lines:
        click.echo(line, err=as_json)
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        from rich.console import Console

        from .reports.advice import render_advice

        render_advice(Console(), document)
        if out is not None:
            click.echo(f"{export_kind + ' config' if export_kind else 'plan'} written to {out}")
    if html_path is not None:
        from .commands import wrote
        from .reports.html_report import write_report
        from .reports.html_sections import recommend_page

        wrote(html_path, write_report(html_path, recommend_page(document, ratio), "--html"), err=as_json)


def _planned_model(model: str, resolved) -> str:
    """A local model is recorded by its path, so the plan reads back from anywhere."""
    local = Path(model).expanduser()
    return str(local.resolve()) if local.exists() else resolved.spec.name
