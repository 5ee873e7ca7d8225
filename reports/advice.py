"""`recommend` output: the JSON document and the rich view."""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..planner.advisor import Recommendation, margin_bytes
from ..planner.plan_file import SAVER_KEYS
from ..planner.units import GIB
from ..planner.methods import method_title
from .estimate_json import method_options_dict, stack_dict
from .estimate_table import stack_text


def config_of(rec: Recommendation) -> dict:
    run = rec.run
    return {
        "method": run.method,
        "rank": run.rank if run.uses_rank else None,
        "alpha": run.lora_alpha if run.uses_rank else None,
        "use_rslora": run.uses_rank and run.rank >= 64,
        "dropout": run.dropout if run.uses_rank else None,
        "targets": list(rec.estimate.adapted),
        "target_preset": ",".join(run.targets) if run.uses_rank else None,
        "method_options": method_options_dict(rec.estimate),
        "batch": run.batch,
        "grad_accum": rec.grad_accum,
        "grad_ckpt": run.grad_ckpt,
        "optimizer": run.optimizer,
        "precision": run.precision,
        "seq_len": run.seq_len,
        "gpus": rec.parallel.gpus if rec.parallel else 1,
        "strategy": rec.parallel.strategy if rec.parallel else None,
        "learning_rate": rec.learning_rate,
        "epochs": rec.epochs,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.03,
        **{key: getattr(run, key) for key in SAVER_KEYS},  # the memory savers the search turned on (or not)
    }


def recommendation_dict(rec: Recommendation) -> dict:
    breakdown = rec.estimate.breakdown
    return {
        "config": config_of(rec),
        "peak_allocated_bytes": breakdown.peak_allocated_bytes,
        "peak_reserved_bytes": breakdown.peak_reserved_bytes,
        "device_used_bytes": breakdown.device_used_bytes,
        "margin_bytes": margin_bytes(rec),
        "quality_score": round(rec.quality_score, 4),
        "speed_score": round(rec.speed_score, 4),
        "reasons": list(rec.reasons),
    }


def advice_document(recs: list[Recommendation], model_note: str, goal: str, margin_note: str, extra: dict) -> dict:
    first = recs[0].estimate
    return {
        "model": {"name": first.model.name, "resolved_from": model_note, "base_params": first.model.base_params},
        "gpu": {"name": first.gpu.name, "key": first.gpu.key, "total_bytes": first.gpu.total_bytes},
        "goal": goal,
        "margin": margin_note,
        "calibration": first.calibration,
        "stack": stack_dict(first.run),  # the transformers version whose memory paths were planned for
        **extra,
        "recommendations": [recommendation_dict(rec) for rec in recs],
    }


def render_advice(console: Console, document: dict) -> None:
    best = document["recommendations"][0]
    cfg = best["config"]
    gib = lambda n: f"{n / GIB:.2f} GiB"  # noqa: E731
    head = (
        f"{document['model']['name']} on {document['gpu']['name']} ({gib(document['gpu']['total_bytes'])}), goal: {document['goal']}\n"
        f"{document['margin']}\n"
    )
    if document.get("stack"):
        head += stack_text(document["stack"]) + "\n"
    if document.get("dataset"):
        head += document["dataset"] + "\n"
    if document.get("context_window"):
        head += document["context_window"] + "\n"
    lines = [f"[bold]{method_title(cfg['method'])}[/bold]"]
    if cfg["rank"]:
        lines.append(f"r={cfg['rank']} α={cfg['alpha']:g} on {cfg['target_preset']} ({','.join(cfg['targets'])})")
    lines.append(f"micro-batch {cfg['batch']} × accumulation {cfg['grad_accum']}, seq {cfg['seq_len']}, grad-ckpt {'on' if cfg['grad_ckpt'] else 'off'}")
    if cfg["strategy"]:
        lines.append(f"{cfg['gpus']} GPUs, {cfg['strategy']} (memory figures are per GPU)")
    lines.append(f"{cfg['optimizer']}, {cfg['precision']}, lr {cfg['learning_rate']:.1e} cosine, warmup 3%, {cfg['epochs']} epochs")
    lines.append(f"predicted: {gib(best['device_used_bytes'])} device used, {gib(best['margin_bytes'])} to spare")
    why = "\n".join(f"• {reason}" for reason in best["reasons"])
    table = Table(title="Alternatives (best of each kind)", title_justify="left")
    for column in ("#", "method", "rank", "targets", "batch×acc", "ckpt", "optimizer", "device used", "spare", "rel. speed"):
        table.add_column(column, justify="right" if column in ("#", "rank", "device used", "spare", "rel. speed") else "left")
    for index, rec in enumerate(document["recommendations"], 1):
        c = rec["config"]
        table.add_row(str(index), c["method"], str(c["rank"] or "-"), c["target_preset"] or "-", f"{c['batch']}×{c['grad_accum']}",
                      "on" if c["grad_ckpt"] else "off", c["optimizer"], gib(rec["device_used_bytes"]), gib(rec["margin_bytes"]), f"{rec['speed_score']:.2f}")
    hints = Text(
        "More quality: all-linear targets before a higher rank, a larger effective batch, DoRA at the same memory. "
        "More speed: turn checkpointing off if it fits, a bigger micro-batch, a 16-bit base instead of 4-bit.",
        style="dim",
    )
    console.print(Group(Text(head), Panel("\n".join(lines) + "\n\n" + why, title="Recommended"), table, hints))
