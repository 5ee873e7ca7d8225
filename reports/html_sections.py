"""HTML pages for the other commands: `estimate --html`, `recommend --html`, `calibrate --report --html`, `run --html`.

Each page holds the sections its command has data for, built from the numbers the command
already computed (nothing is estimated twice), laid out by `html_page.render_page` like the
`vramplan report` page. The Run section (also in `vramplan report --run DIR`) reads a run
directory's marker (`vramplan-run.json`) and, given a store, the run's record: its loss curve,
tokens/s and measured peak beside the estimate made before it.
"""

from __future__ import annotations

from pathlib import Path

from ..planner.errors import ConfigError
from . import html_charts as charts
from .html_page import Cell, Chart, Section, Table, render_page
from .html_report import (
    GIB,
    _bytes_cell,
    _methods_section,
    _overview,
    _short_name,
    _sweeps_section,
    _trust_section,
    page_footer,
)


def _gib(n_bytes) -> str:
    return "-" if n_bytes is None else f"{n_bytes / GIB:.2f} GiB"


# --- estimate ---------------------------------------------------------------------------------


def estimate_page(resolved, gpu, run, methods, results, corrections, store_note: str) -> str:
    """Methods side by side and the setting sweeps for one model, one GPU (or none) and one run's settings.

    `results` are `compare_methods`'s, in the order of `methods`; `corrections` the calibration
    they used (None: the defaults).
    """
    gpus = [gpu] if gpu is not None else []
    key = gpu.key if gpu is not None else None
    results_by_gpu = {key: results}
    corrections_by_gpu = {key: corrections}
    sections = [
        _overview(resolved, gpus, run, methods, corrections_by_gpu, store_note, results_by_gpu),
        _methods_section(gpus, methods, results_by_gpu),
        _sweeps_section(resolved.spec, run, gpus, methods, corrections_by_gpu),
    ]
    where = f"on {gpu.name}" if gpu is not None else "(no GPU given)"
    return render_page(
        f"GPU memory for fine-tuning {_short_name(resolved.spec)} {where}",
        sections,
        subtitle=f"vramplan estimate · {resolved.note} · {', '.join(charts.method_title(m) for m in methods)} · batch {run.batch} × {run.seq_len} tokens",
        footer=page_footer(),
    )


# --- recommend --------------------------------------------------------------------------------


def _config_label(index: int, config: dict) -> str:
    method = charts.method_title(config["method"])
    adapters = f" r={config['rank']} {config['target_preset'] or ''}".rstrip() if config.get("rank") else ""
    return (f"#{index} {method}{adapters}, {config['batch']}×{config['grad_accum']}, "
            f"ckpt {'on' if config['grad_ckpt'] else 'off'}, {config['optimizer']}")


def recommendation_section(document: dict, margin_ratio: float) -> Section:
    """The chosen config, why, and the alternatives against the GPU's memory and the margin.

    `document` is `reports.advice.advice_document`'s (the `recommend --json` object);
    `margin_ratio` the share of the GPU's memory the search kept free.
    """
    gpu, recs = document["gpu"], document["recommendations"]
    best, cfg = recs[0], recs[0]["config"]
    total = gpu["total_bytes"]
    limit = int(total * (1 - margin_ratio))
    facts = [
        ("method", charts.method_title(cfg["method"])),
    ]
    if cfg.get("rank"):
        rslora = ", rsLoRA" if cfg.get("use_rslora") else ""
        facts.append(("adapters", f"r={cfg['rank']} α={cfg['alpha']:g}{rslora} on {cfg['target_preset']} ({', '.join(cfg['targets'])})"))
    facts += [
        ("batch", (f"micro-batch {cfg['batch']} × accumulation {cfg['grad_accum']} = effective {cfg['batch'] * cfg['grad_accum']}, "
                   f"{cfg['seq_len']:,} tokens, gradient checkpointing {'on' if cfg['grad_ckpt'] else 'off'}")),
        ("training", (f"{cfg['optimizer']}, {cfg['precision']}, lr {cfg['learning_rate']:.1e} {cfg.get('lr_scheduler') or 'cosine'}, "
                      f"warmup {cfg.get('warmup_ratio', 0.03):.0%}, {cfg['epochs']:g} epochs")),
        ("predicted", (f"{_gib(best['device_used_bytes'])} device used of {_gib(total)} ({_gib(best['margin_bytes'])} to spare); "
                       f"peak allocated {_gib(best['peak_allocated_bytes'])}, reserved {_gib(best['peak_reserved_bytes'])}")),
    ]
    context = [
        f"{document['model']['name']} ({document['model']['resolved_from']}) on {gpu['name']} ({_gib(total)}), goal: {document['goal']}.",
        f"Safety: {document['margin']}. Calibration: {document['calibration']}.",
    ]
    if document.get("dataset"):
        context.append(document["dataset"][0].upper() + document["dataset"][1:] + ".")
    labels = [_config_label(i, rec["config"]) for i, rec in enumerate(recs, 1)]
    figure = charts.alternatives_figure(
        labels, [rec["config"]["method"] for rec in recs],
        [rec["peak_allocated_bytes"] for rec in recs], [rec["peak_reserved_bytes"] for rec in recs],
        [rec["device_used_bytes"] for rec in recs], gpu["name"], total, limit, f"{margin_ratio:.1%} margin",
        title="The recommendation and its alternatives: predicted device used",
        subtitle=f"best first (#1 is recommended); solid line: {gpu['name']}'s memory; dashed: what fits once the margin is kept free",
    )
    seq_lens = " / ".join(f"{n:,}" for n in dict.fromkeys(rec["config"]["seq_len"] for rec in recs)) + " tokens per example"
    precisions = " / ".join(dict.fromkeys(rec["config"]["precision"] for rec in recs))
    rows = []
    for i, rec in enumerate(recs, 1):
        c = rec["config"]
        within = rec["device_used_bytes"] <= limit
        rows.append((
            Cell(f"#{i}", cls="strong" if i == 1 else ""), charts.method_title(c["method"]), str(c["rank"] or "-"), c["target_preset"] or "-",
            f"{c['batch']}×{c['grad_accum']}", "on" if c["grad_ckpt"] else "off", c["optimizer"],
            _bytes_cell(rec["device_used_bytes"], 2), _bytes_cell(rec["margin_bytes"], 2),
            Cell("✓ yes" if within else "✗ no", cls="ok" if within else "bad"),
            f"{rec['quality_score']:.2f}", f"{rec['speed_score']:.2f}",
        ))
    table = Table(
        columns=("#", "method", "rank", "targets", "batch×acc", "ckpt", "optimizer",
                 "device used, GiB", "spare, GiB", "within margin", "quality", "rel. speed"),
        rows=tuple(rows),
        numeric=(False, False, True, False, True, False, False, True, True, False, True, True),
        caption=f"Alternatives, best of each kind, ranked for the goal '{document['goal']}', all at {seq_lens}, {precisions}. Spare: GPU memory minus device used; "
                f"the fit limit is {_gib(limit)} ({margin_ratio:.1%} of {_gib(total)} kept free). Hover a GiB cell for exact bytes.",
    )
    return Section(
        heading="Recommendation",
        anchor="recommendation",
        paragraphs=tuple(context),
        facts=tuple(facts),
        bullets=tuple(best["reasons"]),
        charts=(Chart(figure, table),),
    )


def recommend_page(document: dict, margin_ratio: float) -> str:
    model = document["model"]["name"]
    short = model.rsplit("/", 1)[-1]
    return render_page(
        f"Recommended fine-tuning config for {short} on {document['gpu']['name']}",
        [recommendation_section(document, margin_ratio)],
        subtitle=f"vramplan recommend · {model} · goal {document['goal']} · {len(document['recommendations'])} configs shown",
        footer=page_footer(),
    )


# --- calibrate --report -----------------------------------------------------------------------


def trust_page(db_path, current: bool = False) -> str:
    """The trust section (estimated vs measured) for every run in a measurement store."""
    from ..calibrate.store import default_db_path

    label = str(db_path) if db_path is not None else f"the default store ({default_db_path()})"
    section = _trust_section(db_path, current=current, label=label)
    if section is None:
        section = Section(
            heading="How far to trust the estimates",
            anchor="trust",
            paragraphs=((f"{label} holds no measured run yet (only oom or error runs): nothing to compare the estimates with. "
                         "Run `vramplan calibrate` to measure some."),),
        )
    return render_page(
        "How far to trust vramplan's estimates",
        [section],
        subtitle=f"vramplan calibrate --report{' --current' if current else ''} · {label}",
        footer=page_footer(),
    )


# --- run --------------------------------------------------------------------------------------


def check_run_dir(run_dir) -> dict:
    """The marker of a `vramplan run` output directory.

    Raises:
        ConfigError: the directory is missing, a file, or holds no (readable) run marker.
    """
    from ..calibrate.trainer.checkpoint import MARKER, read_marker

    path = Path(run_dir)
    if not path.exists():
        raise ConfigError(f"--run {path}: no such directory; give the --out directory of a `vramplan run`")
    if not path.is_dir():
        raise ConfigError(f"--run {path} is a file; give the --out directory of a `vramplan run`")
    marker = read_marker(path)
    if marker is None:
        raise ConfigError(f"--run {path}: no {MARKER} here; give the --out directory of a `vramplan run`")
    return marker


def _run_record(marker: dict, db_path):
    """The newest store record of this run (a resumed run has one per session), and a note on where it came from."""
    from ..calibrate.store import Store

    ids = [int(i) for i in marker.get("record_ids") or []]
    with Store.open(db_path) as store:
        records = [r for r in store.runs() if r.id in ids]
        where = str(store.path)
    if not records:
        listed = ", ".join(f"#{i}" for i in ids) or "none"
        return None, f"{where} holds none of this run's records (the marker lists {listed})"
    record = max(records, key=lambda r: r.id)
    return record, f"run #{record.id} in {where} ({record.outcome})"


def _unit_cell(n_bytes, unit: str) -> Cell:
    if unit == "GiB" or n_bytes is None:
        return _bytes_cell(n_bytes)
    return Cell(f"{n_bytes / (1 << 20):,.2f}", title=f"{n_bytes:,} bytes")


def _settings(run: dict, accum) -> str:
    method = charts.method_title(run.get("method", "?"))
    adapters = f" r={run.get('rank')}" if run.get("rank") else ""  # only methods with a rank record one
    targets = run.get("targets")
    if adapters and targets:
        adapters += " on " + ",".join(targets if isinstance(targets, list) else [str(targets)])
    return (f"{method}{adapters}; micro-batch {run.get('batch', '?')} × accumulation {accum or 1}, {run.get('seq_len', '?')} tokens, "
            f"{run.get('optimizer', '?')}, {run.get('precision', '?')}, gradient checkpointing {'on' if run.get('grad_ckpt') else 'off'}")


def run_section(run_dir, db_path=None, use_store: bool = True) -> Section:
    """A `vramplan run` directory: settings and status from its marker; with its store record the
    loss curve, tokens/s, and the measured peak beside the estimate made before the run.

    `use_store`: look the record up in `db_path` (None: the default store). Without it only the
    marker is read.
    """
    marker = check_run_dir(run_dir)
    record, record_note = _run_record(marker, db_path) if use_store else (None, "no --db given: the marker alone (settings and status)")
    trainer = (record.environment or {}).get("trainer", {}) if record is not None else {}
    run = record.run_config if record is not None else marker.get("run", {})
    accum = trainer.get("grad_accum") or marker.get("grad_accum")
    steps, total = marker.get("step"), marker.get("total_steps") or trainer.get("total_steps")
    facts = [
        ("run directory", str(Path(run_dir))),
        ("status", f"{marker.get('status', '?')} at step {steps if steps is not None else '?'}" + (f" of {total:,}" if total else "")),
        ("model", str(marker.get("model", "?")) + (" (random weights: config.json only)" if trainer.get("random_init") else "")),
        ("data", str(marker.get("data", "?")) + (f" ({trainer['train_rows']:,} training rows)" if trainer.get("train_rows") else "")),
        ("settings", _settings(run, accum)),
        ("learning rate, seed", f"{marker.get('learning_rate', trainer.get('learning_rate', '?'))}, {marker.get('seed', '?')}"),
    ]
    fallbacks = marker.get("fallbacks") or trainer.get("fallbacks")
    if fallbacks:
        facts.append(("fallbacks", "; ".join(str(f) for f in fallbacks)))
    facts.append(("store record", record_note))
    charts_list = []
    details = []
    paragraphs = []
    if record is not None:
        facts.append(("device", f"{record.device_name} · {record.stack}"))
        if trainer.get("tokens_per_s"):
            facts.append(("throughput", f"{trainer['tokens_per_s']:,.0f} tokens/s (over the steps not slowed by memory tracking)"))
        if record.duration_s:
            facts.append(("duration", f"{record.duration_s:,.1f} s (this session)"))
        if record.error_message:
            facts.append(("error", record.error_message))
        curve = [(int(step), float(loss)) for step, loss in trainer.get("loss_curve") or []]
        eval_loss = trainer.get("eval_loss")
        if curve:
            first, last = curve[0][1], curve[-1][1]
            figure = charts.loss_figure(
                curve, eval_loss, int(trainer.get("start_step") or 0),
                title="Training loss per optimizer step",
                subtitle=f"{len(curve)} steps recorded; loss {first:.4f} → {last:.4f}"
                         + (f"; eval loss {eval_loss:.4f}" if eval_loss is not None else "")
                         + (f"; {trainer['tokens_per_s']:,.0f} tokens/s" if trainer.get("tokens_per_s") else ""),
            )
            loss_rows = tuple((f"{step:,}", f"{loss:.4f}") for step, loss in curve)
            charts_list.append(Chart(figure))
            details.append((f"The loss at each of the {len(curve)} recorded steps", Table(columns=("step", "loss"), rows=loss_rows)))
        stats = [("peak allocated", record.est_peak_allocated_bytes, record.peak_allocated_bytes)]
        if record.peak_reserved_bytes is not None:
            stats.append(("peak reserved", record.est_peak_reserved_bytes, record.peak_reserved_bytes))
        if record.device_used_bytes is not None:
            stats.append(("device used", record.est_device_used_bytes, record.device_used_bytes))
        if any(measured for _, _, measured in stats):
            statistic = trainer.get("statistic") or "peak memory"
            # a run on a tiny model peaks at a few MiB: GiB would read 0.003
            unit = "GiB" if max(n or 0 for _, est, meas in stats for n in (est, meas)) >= GIB // 2 else "MiB"
            figure = charts.peak_figure(
                [s for s, _, _ in stats], [e for _, e, _ in stats], [m for _, _, m in stats],
                record.device_name, record.device_total_bytes,
                title="Measured peak against the estimate made before the run",
                subtitle=f"measured: {statistic}", unit=unit,
            )
            rows = tuple(
                (name, _unit_cell(est, unit), _unit_cell(meas, unit),
                 "-" if not (est and meas) else f"{100.0 * (est - meas) / meas:+.1f} %")
                for name, est, meas in stats
            )
            table = Table(columns=("statistic", f"estimated, {unit}", f"measured, {unit}", "error, % of measured"), rows=rows,
                          caption="The estimate stored with the run against what was measured; hover a cell for exact bytes.")
            charts_list.append(Chart(figure, table))
            paragraphs.append(
                "The estimate was made before the first step, from the model's config and these settings; the measurement is "
                f"{statistic}. A positive error means the estimate was on the safe side."
            )
        at_peak = (record.estimate or {}).get("at_peak") or {}
        if at_peak:
            terms = sorted(((name, n) for name, n in at_peak.items() if n), key=lambda kv: charts.term_sort_key(kv[0]))
            details.append((
                f"The estimate term by term at its peak phase ({(record.estimate or {}).get('peak_phase', '?')})",
                Table(columns=("term", "GiB at the peak"), rows=tuple((name, _bytes_cell(n)) for name, n in terms)),
            ))
    else:
        paragraphs.append(
            "The loss curve, tokens/s and the measured peak live in the run's record in the measurement store: "
            "pass the store the run was recorded in (--db) to include them."
        )
    return Section(heading="Run", anchor="run", paragraphs=tuple(paragraphs), facts=tuple(facts),
                   charts=tuple(charts_list), details=tuple(details))


def run_page(run_dir, db_path=None) -> str:
    """The Run section of a finished `vramplan run` (its record looked up in `db_path`, None: the default store)."""
    section = run_section(run_dir, db_path, use_store=True)
    marker = check_run_dir(run_dir)
    run = marker.get("run", {})
    model = Path(str(marker.get("model", "model"))).name
    return render_page(
        f"Fine-tuning run: {model}, {charts.method_title(run.get('method', '?'))}",
        [section],
        subtitle=f"vramplan run · {Path(run_dir)}",
        footer=page_footer(),
    )
