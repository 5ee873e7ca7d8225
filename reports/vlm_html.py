"""HTML pages for vision-language models: `vramplan report` on a VLM and `recommend --html` for one.

The report shows each stage's memory component by component (vision tower, projector, LLM,
optimizer states, overhead) as stacked bars against every GPU, and how the image size moves
image tokens and the peak. Every number comes from `planner.vlm_estimate` (the same estimates
`vramplan estimate` prints for a VLM); nothing here estimates on its own.
"""

from __future__ import annotations

from dataclasses import replace

from ..planner.errors import ConfigError
from ..planner.methods import method_title
from ..planner.vlm_estimate import estimate_vlm, image_plan
from ..planner.specs import RunConfig
from .estimate_table import stack_line
from .html_page import Cell, Chart, Section, Table, render_page, spoken_list
from .html_report import _bytes_cell, _fit_cell, _params, page_footer
from .vlm_html_charts import PART_TITLES, PARTS, components_figure, parts_at_peak, resolution_figure

SWEEP_SIDES = (224, 336, 448, 672, 896, 1344, 1792, 2688)  # the longer side of the image, in pixels


def _gib(n_bytes) -> str:
    return "-" if n_bytes is None else f"{n_bytes / 2**30:.2f} GiB"


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def stage_label(est) -> str:
    """'stage 1 · LLM frozen (QLoRA base)', 'stage 2 · LoRA r16'."""
    run = est.run
    if not est.vlm.trains_llm:
        return f"stage 1 · LLM frozen ({method_title(run.method)} base)"
    return f"stage 2 · {method_title(run.method)}" + (f" r{run.rank}" if run.uses_rank else "")


def _estimates(spec, run: RunConfig, vlm, methods, gpu, corrections) -> list:
    """Both stages for each method, stage 1 first."""
    return [estimate_vlm(spec, replace(run, method=method), replace(vlm, stage=stage), gpu, corrections)
            for stage in (1, 2) for method in methods]


# --- sections ---------------------------------------------------------------------------------


def overview_section(resolved, spec, gpus, run: RunConfig, vlm, methods, estimates_by_gpu: dict) -> Section:
    plan = next(iter(estimates_by_gpu.values()))[0].plan
    sizes = ", ".join(f"{w}x{h} → {t.resized[0]}x{t.resized[1]}: {t.llm:,} tokens ({t.vit:,} ViT patches)" for (w, h), t in zip(plan.sizes, plan.per_image))
    facts = [
        ("model", spec.name),
        ("resolved from", resolved.note),
        ("components", f"vision tower {_params(spec.vision.params)}, projector {_params(spec.projector.params)}, LLM {_params(spec.decoder.base_params)} "
                       f"({spec.model_type}, {spec.family.title})"),
        ("images", f"{vlm.images} per example: {sizes}" + (f"; max_pixels {vlm.max_pixels:,}" if vlm.max_pixels else "")),
        ("sequence", f"{run.seq_len:,} tokens the LLM sees: {plan.llm_tokens:,} image tokens + {run.seq_len - plan.llm_tokens:,} text"),
        ("step", f"batch {run.batch}, gradient checkpointing {'on' if run.grad_ckpt else 'off'}, {run.optimizer}, {run.precision}, "
                 f"vision {vlm.vision}, projector {vlm.projector}" + (", vision NF4" if vlm.quantize_vision else "")),
        ("LLM methods (stage 2)", ", ".join(method_title(m) for m in methods)),
        ("transformers", stack_line(run)),  # whose memory paths were modelled (planner/stack.py)
    ]
    for gpu in gpus:
        facts.append((f"GPU {gpu.key}", f"{gpu.name}: {gpu.total_bytes / 2**30:.2f} GiB ({gpu.total_bytes:,} bytes); calibration: {estimates_by_gpu[gpu.key][0].calibration}"))
    return Section(
        heading="What was estimated",
        anchor="overview",
        paragraphs=(
            "A vision-language model trains in two stages (LLaVA): stage 1 warms up the projector with the LLM and the vision "
            "tower frozen; stage 2 trains the projector and the LLM by the method. Every memory figure is in GiB (2^30 bytes); "
            "'device used' is what nvidia-smi would show: live tensors at the peak, the allocator's slack and the CUDA context.",
        ),
        facts=tuple(facts),
    )


def components_section(gpus, estimates_by_gpu: dict, heading: str = "Components per stage", caption_note: str = "",
                       limit: tuple[int, str] | None = None) -> Section:
    """Stacked bars per (stage, method) at the first GPU's calibration, every GPU's memory as a line; a fit table.

    `limit`: (bytes, label) of a recommendation's fit limit, drawn as its own line.
    """
    reference = estimates_by_gpu[gpus[0].key]
    labels = [stage_label(est) for est in reference]
    parts = [parts_at_peak(est.breakdown) for est in reference]
    first = reference[0]
    figure = components_figure(
        labels, parts, gpus,
        title=f"Peak memory by component and stage: {_short(first.spec.name)}",
        subtitle=f"{first.plan.llm_tokens:,} image tokens + text = {first.run.seq_len:,} tokens, batch {first.run.batch}; "
                 f"bars total device used at {gpus[0].name}'s calibration; dashed lines: GPU memory",
        limit=limit,
    )
    rows = [(PART_TITLES[part], *[_bytes_cell(p[part]) if p[part] else Cell("-") for p in parts]) for part in PARTS]
    rows += [
        (Cell("device used", cls="strong"), *[_bytes_cell(est.breakdown.device_used_bytes) for est in reference]),
        ("peak phase", *[est.breakdown.peak_phase for est in reference]),
        ("trainable params", *[f"{est.trainable_params:,}" for est in reference]),
    ]
    table = Table(columns=("component (GiB at the peak)", *labels), rows=tuple(rows),
                  caption="Bytes at each stage's peak, GiB to 3 decimals (hover for exact bytes). " + caption_note)
    fit_rows = []
    for gpu in gpus:
        for est in estimates_by_gpu[gpu.key]:
            fit_rows.append((gpu.name, stage_label(est), _bytes_cell(est.breakdown.device_used_bytes, 2),
                             Cell(f"{gpu.total_bytes / 2**30:.2f}", title=f"{gpu.total_bytes:,} bytes"), _fit_cell(est.headroom_bytes)))
    fit_table = Table(columns=("GPU", "stage · method", "device used, GiB", "GPU memory, GiB", "fits? headroom, GiB"),
                      rows=tuple(fit_rows), numeric=(False, False, True, True, True),
                      caption="Per GPU (each with its own calibration): does the stage fit.")
    return Section(
        heading=heading,
        anchor="components",
        paragraphs=(
            "Each bar stacks the estimate's components at that stage's peak: the vision tower (weights; activations when it "
            "trains or checkpointing pulls it into autograd), the projector, the LLM (weights, adapters, activations), the "
            "optimizer states of everything that trains, and the overhead outside the tensors.",
        ),
        charts=(Chart(figure, table),),
        tables=(fit_table,),
    )


def sweep_sizes(spec, vlm) -> list[tuple[float, str]]:
    """(scale of the asked images, label) for each swept size, the asked one included, smallest first."""
    base = vlm.image_sizes or (spec.family.default_image,)
    longest = max(max(w, h) for w, h in base)
    scales = {side / longest for side in SWEEP_SIDES} | {1.0}
    w0, h0 = base[0]
    return [(scale, f"{round(w0 * scale)}x{round(h0 * scale)}") for scale in sorted(scales)]


def resolution_section(spec, run: RunConfig, vlm, methods, gpus, corrections) -> Section:
    """Image tokens and each (stage, method)'s device-used peak as the images grow; the text part stays as asked."""
    gpu = gpus[0]
    asked = image_plan(spec, run, vlm)
    text_tokens = run.seq_len - asked.llm_tokens
    sizes = sweep_sizes(spec, vlm)
    labels, tokens, patches, resized = [], [], [], []
    keys = [(stage, method) for stage in (1, 2) for method in methods]
    series = {key: [] for key in keys}
    current = None
    for scale, label in sizes:
        scaled = replace(vlm, image_sizes=tuple((max(1, round(w * scale)), max(1, round(h * scale))) for w, h in (vlm.image_sizes or (spec.family.default_image,))))
        try:
            plan = image_plan(spec, RunConfig(seq_len=1 << 30), scaled)
        except ConfigError:  # e.g. an aspect ratio the processor refuses
            continue
        labels.append(label)
        current = label if scale == 1.0 else current
        tokens.append(plan.llm_tokens)
        patches.append(plan.vit_tokens)
        resized.append(", ".join(dict.fromkeys(f"{t.resized[0]}x{t.resized[1]}" for t in plan.per_image)))
        sized_run = replace(run, seq_len=plan.llm_tokens + text_tokens)
        for stage, method in keys:
            try:
                est = estimate_vlm(spec, replace(sized_run, method=method), replace(scaled, stage=stage), gpu, corrections.get(gpu.key))
                series[(stage, method)].append(est.breakdown.device_used_bytes)
            except ConfigError:
                series[(stage, method)].append(None)
    names = {key: (f"stage 1 · {method_title(key[1])} base" if key[0] == 1 else f"stage 2 · {method_title(key[1])}") for key in keys}
    figure = resolution_figure(
        labels, tokens, [(names[key], key[0], key[1], series[key]) for key in keys], gpus, current,
        title="Image size: image tokens and the peak",
        subtitle=f"{vlm.images} image(s) per example, {text_tokens:,} text tokens beside them; batch {run.batch}; "
                 f"{gpu.name}'s calibration; dashed lines: GPU memory",
    )
    rows = tuple(
        (Cell(label + (" (asked)" if label == current else "")), resized[i], f"{tokens[i]:,}", f"{patches[i]:,}",
         *[_bytes_cell(series[key][i], 2) for key in keys])
        for i, label in enumerate(labels)
    )
    table = Table(columns=("image size", "resized to", "image tokens", "ViT patches", *[f"{names[key]}, GiB" for key in keys]),
                  rows=rows, numeric=(False, False, True, True, *[True] * len(keys)),
                  caption="Device used per stage, GiB (hover for exact bytes); sequence = image tokens + the text tokens asked for.")
    return Section(
        heading="How the image size moves the peak",
        anchor="resolution",
        paragraphs=(
            f"The images of one example scaled so their longer side runs from {SWEEP_SIDES[0]} to {SWEEP_SIDES[-1]} pixels (plus the "
            "size asked for), as the processor resizes them: Qwen-VL turns every 28x28 pixels into one token up to its "
            "max_pixels, LLaVA resizes every image to its fixed grid. Where a line crosses a GPU's line, that size stops fitting.",
        ),
        charts=(Chart(figure, table),),
    )


# --- pages ------------------------------------------------------------------------------------


def build_vlm_report(resolved, spec, gpus, run: RunConfig, vlm, methods, corrections: dict, run_section=None) -> str:
    """`vramplan report` for a VLM: overview, components per stage against each GPU, the resolution sweep[, a run].

    Raises:
        ConfigError: the images do not fit the sequence, a method the VLM planner does not place.
    """
    estimates_by_gpu = {gpu.key: _estimates(spec, run, vlm, methods, gpu, corrections.get(gpu.key)) for gpu in gpus}
    sections = [
        overview_section(resolved, spec, gpus, run, vlm, methods, estimates_by_gpu),
        components_section(gpus, estimates_by_gpu),
        resolution_section(spec, run, vlm, methods, gpus, corrections),
        run_section,
    ]
    return render_page(
        f"GPU memory for fine-tuning {_short(spec.name)} (vision-language) on {spoken_list(g.name for g in gpus)}",
        sections,
        subtitle=f"{resolved.note} · two stages · {', '.join(method_title(m) for m in methods)} · batch {run.batch} × {run.seq_len} tokens",
        footer=page_footer(),
    )


def vlm_advice_page(advice, document: dict) -> str:
    """`recommend --html` for a VLM: the plan, why, and both stages' components against the GPU."""
    stages = advice.stages
    gpu = stages[-1].estimate.gpu
    facts = []
    for stage, entry in zip(stages, document["stages"]):
        cfg, lr = entry["config"], entry["lr"]
        facts.append((stage_label(stage.estimate),
                      f"vision {entry['vlm']['vision']}, projector {entry['vlm']['projector']}; micro-batch {cfg['batch']} × accumulation "
                      f"{stage.grad_accum}, {cfg['seq_len']:,} tokens, checkpointing {'on' if cfg['grad_ckpt'] else 'off'}, {cfg['optimizer']}, "
                      f"{cfg['precision']}, lr {lr['learning_rate']:.0e}, {stage.epochs} epoch(s); "
                      f"{_gib(entry['device_used_bytes'])} device used of {_gib(gpu.total_bytes)}"))
    plan = Section(
        heading="The two-stage plan",
        anchor="plan",
        paragraphs=(f"{document['model']['name']} ({document['model']['resolved_from']}) on {gpu.name}. "
                    f"Safety: {document['margin']}. Calibration: {document['calibration']}.",),
        facts=tuple(facts),
        bullets=(*advice.reasons, *(reason for stage in stages for reason in stage.reasons)),
    )
    limit = (advice.budget_bytes, f"fit limit {_gib(advice.budget_bytes)} ({advice.margin_ratio:.0%} margin kept free)")
    components = components_section([gpu], {gpu.key: [stage.estimate for stage in stages]}, heading="Both stages, component by component",
                                    limit=limit)
    return render_page(
        f"Two-stage plan for {_short(document['model']['name'])} on {gpu.name}",
        [plan, components],
        subtitle=f"vramplan recommend · {document['model']['name']} · {document['image_tokens']:,} image tokens per example",
        footer=page_footer(),
    )
