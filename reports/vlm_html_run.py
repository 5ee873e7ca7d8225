"""The Run section for a VLM `vramplan run`: both stages' loss curves and measured vs estimated peaks.

A two-stage run writes OUT/stage-1 and OUT/stage-2, each with its marker (`vramplan-run.json`)
listing the store records of its sessions; a single `--stage N` run writes its marker in OUT.
Each record keeps the stage's `VlmRun` under ``run_config["vlm"]`` and the estimate's
components under ``estimate["components"]`` (calibrate/trainer/vlm_loop.py).
"""

from __future__ import annotations

from pathlib import Path

from ..planner.errors import ConfigError
from ..planner.methods import METHODS
from . import html_charts as charts
from .html_page import Cell, Chart, Section, Table, render_page
from .html_report import GIB, _bytes_cell, page_footer
from .vlm_html_charts import PART_TITLES, stage_loss_figure

STAGES = (1, 2)


def stage_markers(run_dir) -> dict[int, tuple[Path, dict]]:
    """stage -> (its folder, its marker) for a VLM run directory; {} when it holds no VLM run.

    Raises:
        ConfigError: the directory does not exist or is a file.
    """
    from ..calibrate.trainer.checkpoint import read_marker

    path = Path(run_dir)
    if not path.exists():
        raise ConfigError(f"--run {path}: no such directory; give the --out directory of a `vramplan run`")
    if not path.is_dir():
        raise ConfigError(f"--run {path} is a file; give the --out directory of a `vramplan run`")
    found = {}
    for folder in (path, *(path / f"stage-{stage}" for stage in STAGES)):
        marker = read_marker(folder) if folder.is_dir() else None
        stage = ((marker or {}).get("vlm") or {}).get("stage") or ((marker or {}).get("run", {}).get("vlm") or {}).get("stage")
        if marker is not None and folder != path:
            stage = stage or int(folder.name.split("-")[1])
        if marker is not None and stage in STAGES:
            found[int(stage)] = (folder, marker)
    return found


def stage_records(markers: dict, db_path) -> dict:
    """stage -> the newest store record of that stage's run (a resumed stage has one per session)."""
    from ..calibrate.store import Store

    wanted = {int(i): stage for stage, (_, marker) in markers.items() for i in marker.get("record_ids") or []}
    with Store.open(db_path) as store:
        records = [r for r in store.runs() if r.id in wanted and "vlm" in (r.run_config or {})]
    newest = {}
    for record in records:
        stage = wanted[record.id]
        if stage not in newest or record.id > newest[stage].id:
            newest[stage] = record
    return newest


def _settings(record) -> str:
    run, vlm = record.run_config, record.run_config["vlm"]
    trainer = (record.environment or {}).get("trainer", {})
    lr = trainer.get("lr") or {}
    method = METHODS.get(run.get("method"))
    llm = "frozen" if vlm.get("stage") == 1 else charts.method_title(run.get("method", "?")) + (f" r={run['rank']}" if method and method.adapter is not None and method.adapter.uses_rank else "")
    sizes = ", ".join(f"{w}x{h}" for w, h in vlm.get("image_sizes") or []) or "the family's default"
    return (f"LLM {llm}, vision {vlm.get('vision')}, projector {vlm.get('projector')}; {vlm.get('images')} image(s) [{sizes}] per example; "
            f"micro-batch {run.get('batch')} × accumulation {trainer.get('grad_accum') or 1}, {run.get('seq_len')} tokens, {run.get('optimizer')}, "
            f"{run.get('precision')}; lr {lr.get('learning_rate', trainer.get('learning_rate', '?'))}"
            + (f", projector lr {lr['projector_lr']}" if lr.get("projector_lr") else "")
            + (f", vision lr ×{lr['vision_lr_scale']}" if vlm.get("vision") != "freeze" and lr.get("vision_lr_scale") is not None else ""))


def _unit(records) -> str:
    biggest = max([n or 0 for r in records for n in (r.peak_allocated_bytes, r.est_peak_allocated_bytes)] + [0])
    return "GiB" if biggest >= GIB // 2 else "MiB"  # a tiny CPU model peaks at a few MiB


def _cell(n_bytes, unit: str) -> Cell:
    if unit == "GiB" or n_bytes is None:
        return _bytes_cell(n_bytes)
    return Cell(f"{n_bytes / (1 << 20):,.2f}", title=f"{n_bytes:,} bytes")


def vlm_run_section(run_dir, db_path=None) -> Section:
    """Both stages of a VLM run from their store records (`db_path` None: the default store).

    Raises:
        ConfigError: no VLM stage marker in the directory.
    """
    markers = stage_markers(run_dir)
    if not markers:
        raise ConfigError(f"--run {run_dir}: no VLM stage run here (no vramplan-run.json of a --stage or --schedule run in it, "
                          "stage-1/ or stage-2/)")
    records = stage_records(markers, db_path)
    facts = [("run directory", str(Path(run_dir)))]
    for stage in sorted(markers):
        folder, marker = markers[stage]
        status = f"{marker.get('status', '?')} at step {marker.get('step', '?')}"
        record = records.get(stage)
        facts.append((f"stage {stage}", f"{status}; " + (_settings(record) + f"; store run #{record.id} ({record.outcome})" if record
                                                         else "no store record found (pass the store it was recorded in with --db)")))
    ordered = [records[s] for s in sorted(records)]
    charts_list, details, paragraphs = [], [], []
    curves = {s: [(int(step), float(loss)) for step, loss in ((r.environment or {}).get("trainer", {}).get("loss_curve") or [])] for s, r in records.items()}
    if any(curves.values()):
        summary = "; ".join(f"stage {s}: {c[0][1]:.4f} → {c[-1][1]:.4f} over {c[-1][0]:,} steps" for s, c in sorted(curves.items()) if c)
        charts_list.append(Chart(stage_loss_figure(curves, "Training loss, both stages", summary)))
        details.append(("The loss at each recorded step", Table(columns=("stage", "step", "loss"), rows=tuple(
            (str(s), f"{step:,}", f"{loss:.4f}") for s, c in sorted(curves.items()) for step, loss in c))))
    if ordered:
        unit = _unit(ordered)
        stats, estimated, measured = [], [], []
        for record in ordered:
            stage = record.run_config["vlm"]["stage"]
            for name, est, meas in (("peak allocated", record.est_peak_allocated_bytes, record.peak_allocated_bytes),
                                    ("device used", record.est_device_used_bytes, record.device_used_bytes)):
                if meas is not None:
                    stats.append(f"stage {stage} · {name}")
                    estimated.append(est)
                    measured.append(meas)
        if stats:
            device = ordered[-1]
            figure = charts.peak_figure(stats, estimated, measured, device.device_name, device.device_total_bytes,
                                        title="Measured peak against the estimate made before each stage",
                                        subtitle=f"measured on {device.device_name} ({device.stack})", unit=unit)
            rows = tuple((name, _cell(est, unit), _cell(meas, unit), "-" if not (est and meas) else f"{100.0 * (est - meas) / meas:+.1f} %")
                         for name, est, meas in zip(stats, estimated, measured))
            charts_list.append(Chart(figure, Table(columns=("stage · statistic", f"estimated, {unit}", f"measured, {unit}", "error, % of measured"),
                                                   rows=rows, caption="Hover a cell for exact bytes. A positive error: the estimate was on the safe side.")))
            paragraphs.append("Each stage's estimate was made before its first step, for the largest example of the data; the measurement is "
                              "that stage's peak.")
        parts = [p for p in PART_TITLES if any(p in (r.estimate or {}).get("components", {}) for r in ordered)]
        if parts:
            details.append(("The estimate component by component", Table(
                columns=("component", *[f"stage {r.run_config['vlm']['stage']}, {unit}" for r in ordered]),
                rows=tuple((PART_TITLES[p], *[_cell(((r.estimate or {}).get("components", {}).get(p) or {}).get("total_bytes"), unit) for r in ordered])
                           for p in parts))))
    else:
        paragraphs.append("The loss curves and measured peaks live in the runs' records in the measurement store: pass the store "
                          "the run was recorded in (--db) to include them.")
    return Section(heading="Run (vision-language, by stage)", anchor="run", paragraphs=tuple(paragraphs), facts=tuple(facts),
                   charts=tuple(charts_list), details=tuple(details))


def vlm_run_page(run_dir, db_path=None) -> str:
    """A page holding only the VLM Run section."""
    section = vlm_run_section(run_dir, db_path)
    return render_page(f"Vision-language fine-tuning run: {Path(run_dir).name}", [section],
                       subtitle=f"vramplan run · {Path(run_dir)}", footer=page_footer())
