"""What a person or a script sees of a VLM estimate: the component breakdown table and the JSON document."""

from __future__ import annotations

from .estimate_json import peak_fields, stack_dict
from .estimate_table import stack_line, stack_text
from ..planner.methods import method_record
from ..planner.units import GIB

COMPONENT_TITLES = {"vision": "vision tower", "projector": "projector", "llm": "LLM"}


def _images(est) -> list[dict]:
    return [
        {"width": w, "height": h, "resized": list(t.resized), "llm_tokens": t.llm, "vit_tokens": t.vit, "tiles": t.tiles}
        for (w, h), t in zip(est.plan.sizes, est.plan.per_image)
    ]


def stage_dict(est) -> dict:
    breakdown = est.breakdown
    run = est.run
    return {
        "stage": est.vlm.stage,
        "method": run.method,
        "trainable_params": est.trainable_params,
        "image_tokens": est.plan.llm_tokens,
        "text_tokens": run.seq_len - est.plan.llm_tokens,
        "vit_tokens": est.plan.vit_tokens,
        "components": est.components(),
        "target_components": est.target_components(),
        "terms": breakdown.at_peak(),
        "term_notes": {term.name: term.note for term in breakdown.terms},
        "terms_all_phases": breakdown.by_name(),
        **peak_fields(est),
        "calibration": est.calibration,
        "config": {
            "vision": est.vlm.vision, "projector": est.vlm.projector, "quantize_vision": est.vlm.quantize_vision,
            "llm_targets": list(est.llm_adapted), "rank": run.rank, "batch": run.batch, "seq_len": run.seq_len,
            "grad_ckpt": run.grad_ckpt, "optimizer": run.optimizer, "precision": run.precision, "attention": run.attention,
            "images": est.vlm.images, "max_pixels": est.vlm.max_pixels,
        },
    }


def vlm_document(estimates: list, note: str, schedule: str | None) -> dict:
    """`estimate --json` for a VLM: image tokens per example, and per stage the components and terms."""
    first = estimates[0]
    spec, gpu = first.spec, first.gpu
    peak = max(estimates, key=lambda e: e.breakdown.device_used_bytes)
    return {
        "model": {"name": spec.name, "resolved_from": note, "model_type": spec.model_type, "base_params": spec.params,
                  "components": {"vision": spec.vision.params, "projector": spec.projector.params, "llm": spec.decoder.base_params}},
        "gpu": None if gpu is None else {"name": gpu.name, "key": gpu.key, "total_bytes": gpu.total_bytes, "bf16": gpu.bf16},
        "image_tokens": first.plan.llm_tokens,
        "cross_attention": _cross_attention(first),  # None unless the images enter through cross-attention (Mllama)
        "images": _images(first),
        "schedule": schedule,
        "stack": stack_dict(first.run),  # the transformers version modelled (planner/stack.py)
        "stage": first.vlm.stage if len(estimates) == 1 else [e.vlm.stage for e in estimates],
        "peak_stage": peak.vlm.stage,
        "peak_device_used_bytes": peak.breakdown.device_used_bytes,
        "estimates": [stage_dict(e) for e in estimates],
    }


def _gib(value: int) -> str:
    return f"{value / GIB:.2f}"


def _targets_line(est) -> str:
    """Which components --targets reaches: as PEFT would match the names, and what is adapted here."""
    parts = est.target_components()
    matched = ", ".join(f"{COMPONENT_TITLES[p]} {v['matched_modules']:,}" for p, v in parts.items())
    adapted = ", ".join(f"{COMPONENT_TITLES[p]} {v['adapted_modules']:,}" for p, v in parts.items() if v["adapted_modules"]) or "none"
    return (f"targets {','.join(est.run.targets)}: PEFT given these names would wrap Linears in {matched}; "
            f"adapted here: {adapted} (the LLM only by default; --vision lora adapts the tower)")


def _cross_attention(est) -> dict | None:
    """Cross-attention VLMs (Mllama): the images are k/v of the decoder's cross layers, not tokens."""
    layers = est.spec.family.cross_attention_layers
    if layers is None:
        return None
    return {"layers": layers(est.spec.config), "vision_tokens": est.plan.vit_tokens,
            "seq_len": "text tokens and one <|image|> token per image; the images enter as cross-attention k/v"}


def _cross_line(est) -> str:
    cross = _cross_attention(est)
    return (f"cross-attention: the images are not in the LLM's sequence; {len(cross['layers'])} cross-attention layers attend "
            f"over {cross['vision_tokens']:,} vision tokens per example (every image padded to all its tiles), so --seq-len counts text only "
            f"(plus one <|image|> token per image)")


def render_vlm(console, estimates: list, note: str) -> None:
    """The component breakdown, one column per stage (or method), image tokens in the header."""
    from rich.table import Table

    first = estimates[0]
    spec, run = first.spec, first.run
    plan = first.plan
    console.print(f"model {note} · {spec.params / 1e9:.2f}B params: vision tower {spec.vision.params / 1e6:,.1f}M, "
                  f"projector {spec.projector.params / 1e6:,.1f}M, LLM {spec.decoder.base_params / 1e9:.2f}B")
    sizes = ", ".join(f"{w}x{h}->{t.resized[0]}x{t.resized[1]}: {t.llm:,} tokens ({t.vit:,} ViT patches)" for (w, h), t in zip(plan.sizes, plan.per_image))
    console.print(f"images: {first.vlm.images} per example [{sizes}] · image tokens {plan.llm_tokens:,} + text {run.seq_len - plan.llm_tokens:,} = seq {run.seq_len:,}")
    if spec.family.cross_attention_layers is not None:  # Mllama
        console.print(_cross_line(first))
    console.print(f"batch {run.batch} · grad-ckpt {'on' if run.grad_ckpt else 'off'} · {run.optimizer} · {run.precision} · vision {first.vlm.vision} · projector {first.vlm.projector}"
                  + (" · vision NF4" if first.vlm.quantize_vision else ""))
    console.print(stack_line(run))  # the transformers version modelled (planner/stack.py)
    console.print(_targets_line(first))
    gpu = first.gpu
    title = "Peak memory per component and term (GiB, 2^30 bytes)" + (f" on {gpu.name}, {gpu.total_bytes / GIB:.2f} GiB" if gpu else "")
    table = Table(title=title, title_justify="left")
    table.add_column("term")
    for est in estimates:
        table.add_column(f"stage {est.vlm.stage} · {est.run.method_record.title if est.vlm.trains_llm else 'LLM frozen'}", justify="right")
    names = list(dict.fromkeys(term.name for est in estimates for term in est.breakdown.terms))
    for name in names:
        cells = []
        for est in estimates:
            live = est.breakdown.at_peak()
            every = est.breakdown.by_name()
            cells.append("-" if name not in every else (_gib(live[name]) if live[name] or not every[name] else f"({_gib(every[name])})"))
        table.add_row(name, *cells)
    table.add_section()
    for part in ("vision", "projector", "llm"):
        table.add_row(f"{COMPONENT_TITLES[part]} total", *[_gib(est.components()[part]["total_bytes"]) for est in estimates])
    table.add_row("trainable", *[f"{est.trainable_params / 1e6:,.1f}M" for est in estimates])
    table.add_row("peak phase", *[est.breakdown.peak_phase for est in estimates])
    table.add_row("peak allocated", *[_gib(est.breakdown.peak_allocated_bytes) for est in estimates])
    table.add_row("device used", *[_gib(est.breakdown.device_used_bytes) for est in estimates])
    if gpu is not None:
        table.add_section()
        table.add_row("fits?", *[(f"yes, {_gib(est.headroom_bytes)} free" if est.fits else f"no, {_gib(-est.headroom_bytes)} over") for est in estimates])
    console.print(table)
    if len(estimates) > 1:
        peak = max(estimates, key=lambda e: e.breakdown.device_used_bytes)
        console.print(f"two-stage schedule: the larger peak is stage {peak.vlm.stage}, {_gib(peak.breakdown.device_used_bytes)} GiB device used.")
    console.print("Values in (parentheses) are not live at that stage's peak phase. Stage 1 trains the projector only; "
                  "stage 2 the projector and the LLM by --method. Calibration: " + first.calibration + ".")


# ---------------------------------------------------------------- recommend for a VLM
def _training(stage) -> dict:
    """The config keys a stage's trainer needs beyond its RunConfig (they do not change memory)."""
    return {"grad_accum": stage.grad_accum, "epochs": stage.epochs, "lr_scheduler": "cosine", "warmup_ratio": 0.03}  # the lrs: the entry's "lr"


def plan_stages(advice) -> list[dict]:
    """The plan file's `stages` (planner/plan_file.py's contract) for both recommended stages."""
    from ..planner.plan_file import stage_entry

    return [stage_entry(stage.plan, _training(stage)) for stage in advice.stages]


def stage_training(advice) -> dict:
    """Stage 2's training keys: the top-level `config` of a VLM plan file is stage 2's."""
    stage = advice.stages[-1]
    return {**_training(stage), "learning_rate": stage.plan.learning_rate}


def vlm_advice_document(advice, note: str, margin_note: str) -> dict:
    """`recommend --json` for a VLM: both stages (plan-file entries + estimate), image tokens, components."""
    two = advice.stages[-1].estimate
    spec, gpu = two.spec, two.gpu
    stages = []
    for stage, entry in zip(advice.stages, plan_stages(advice)):
        est = stage.estimate
        breakdown = est.breakdown
        stages.append({
            **entry,
            "grad_accum": stage.grad_accum,
            "epochs": stage.epochs,
            "components": est.components(),
            "trainable_params": est.trainable_params,
            "peak_allocated_bytes": breakdown.peak_allocated_bytes,
            "peak_reserved_bytes": breakdown.peak_reserved_bytes,
            "device_used_bytes": breakdown.device_used_bytes,
            "fits": est.fits,
            "headroom_bytes": est.headroom_bytes,
            "reasons": list(stage.reasons),
        })
    row = advice.row
    return {
        "model": {"name": spec.name, "resolved_from": note, "model_type": spec.model_type, "base_params": spec.params},
        "gpu": {"name": gpu.name, "key": gpu.key, "total_bytes": gpu.total_bytes},
        "margin": margin_note,
        "fit_limit_bytes": advice.budget_bytes,
        "calibration": two.calibration,
        "stack": stack_dict(two.run),  # the transformers version whose memory paths were planned for
        "table": {"method": row.method, "ranks": list(row.ranks), "vision": row.vision, "reason": row.reason},
        "image_tokens": two.plan.llm_tokens,
        "requested_image_tokens": advice.requested_image_tokens,
        "max_pixels": two.vlm.max_pixels,
        "images": _images(two),
        "components": {"vision": {"params": spec.vision.params}, "projector": {"params": spec.projector.params},
                       "llm": {"params": spec.decoder.base_params}},
        "reasons": list(advice.reasons),
        "stages": stages,
    }


def render_vlm_advice(console, document: dict) -> None:
    """Both stages side by side in panels, the shared reasons, then the component table."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    gib = lambda n: f"{n / GIB:.2f} GiB"  # noqa: E731
    gpu = document["gpu"]
    sizes = ", ".join(f"{i['width']}x{i['height']}->{i['resized'][0]}x{i['resized'][1]}" for i in document["images"])
    head = (f"{document['model']['name']} on {gpu['name']} ({gib(gpu['total_bytes'])}): a two-stage plan\n"
            f"{document['margin']}\n{stack_text(document['stack'])}\nimages per example: {len(document['images'])} [{sizes}], "
            f"{document['image_tokens']:,} image tokens" + (f" (max_pixels {document['max_pixels']:,})" if document["max_pixels"] else ""))
    parts = [Text(head), Text("\n".join(f"• {reason}" for reason in document["reasons"]))]
    for stage in document["stages"]:
        cfg, vlm, lr = stage["config"], stage["vlm"], stage["lr"]
        title = "Stage 1: projector warm-up" if stage["stage"] == 1 else "Stage 2: projector + LLM"
        llm = ("frozen" + (" (4-bit)" if method_record(cfg["method"]).quantizes_base else "")) if stage["stage"] == 1 else cfg["method"] + (f" r={cfg['rank']} α={cfg['alpha']:g} on {cfg['target_preset']}" if cfg["rank"] else "")
        lines = [
            f"LLM {llm} · vision {vlm['vision']}{' (NF4)' if vlm['quantize_vision'] else ''} · projector {vlm['projector']}",
            f"micro-batch {cfg['batch']} × accumulation {stage['grad_accum']}, seq {cfg['seq_len']}, grad-ckpt {'on' if cfg['grad_ckpt'] else 'off'}",
            f"{cfg['optimizer']}, {cfg['precision']}, lr {lr['learning_rate']:.0e} cosine, {stage['epochs']} epoch(s)"
            + (f", vision lr ×{lr['vision_lr_scale']:g}" if vlm["vision"] != "freeze" else ""),
            f"predicted: {gib(stage['device_used_bytes'])} device used, {gib(stage['headroom_bytes'])} to spare",
            "",
            *(f"• {reason}" for reason in stage["reasons"]),
        ]
        parts.append(Panel("\n".join(lines), title=title))
    table = Table(title="Peak memory per component (GiB, 2^30 bytes)", title_justify="left")
    table.add_column("component")
    for stage in document["stages"]:
        table.add_column(f"stage {stage['stage']}", justify="right")
    for part in ("vision", "projector", "llm"):
        table.add_row(COMPONENT_TITLES[part], *[_gib(s["components"][part]["total_bytes"]) for s in document["stages"]])
    table.add_row("peak allocated", *[_gib(s["peak_allocated_bytes"]) for s in document["stages"]])
    table.add_row("device used", *[_gib(s["device_used_bytes"]) for s in document["stages"]])
    parts.append(table)
    console.print(Group(*parts))
