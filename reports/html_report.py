"""The HTML comparison report: methods side by side, sweeps, a fit matrix and, given a store, trust.

`build_report` takes every number from the planner (`planner.limits.compare_methods`,
`planner.comparison`: the same estimates `vramplan estimate` prints, with the same calibration
lookup) and hands them to the pure figure builders in `html_charts`; `html_page` lays them out
with a table of the exact numbers under each chart. Nothing here estimates.
"""

from __future__ import annotations

from pathlib import Path

from ..planner.catalog import resolve_gpu, resolve_model
from ..planner.errors import ConfigError
from ..planner import comparison
from ..planner.methods import DEFAULT_METHODS, METHODS
from .estimate_table import adapter_lines, stack_line
from ..planner.specs import GpuSpec, ModelSpec, RunConfig
from . import html_charts as charts
from ..planner.units import GIB
from .html_page import Cell, Chart, Section, Table, render_page, spoken_list



def _bytes_cell(n_bytes: int | None, digits: int = 3) -> Cell:
    """GiB to `digits` decimals; the exact bytes in the tooltip. Below the last digit: '<0.001', never a bare 0."""
    if n_bytes is None:
        return Cell("-")
    smallest = 10.0**-digits
    if 0 < n_bytes / GIB < smallest / 2:
        return Cell(f"<{smallest:.{digits}f}", title=f"{n_bytes:,} bytes")
    return Cell(f"{n_bytes / GIB:.{digits}f}", title=f"{n_bytes:,} bytes")


def _params(n: int) -> str:
    """8.03B, 151.9M: parameter counts at a readable scale."""
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _fit_cell(headroom: int | None) -> Cell:
    if headroom is None:
        return Cell("-")
    fits = headroom >= 0
    return Cell(f"{'✓' if fits else '✗'} {headroom / GIB:+.2f}", title=f"headroom {headroom:,} bytes", cls="ok" if fits else "bad")


def _check_precision(run: RunConfig, gpus: list[GpuSpec]) -> None:
    uses_bf16 = run.precision.startswith("bf16") or run.adapter_dtype == "bf16"
    for gpu in gpus:
        if uses_bf16 and not gpu.bf16:
            raise ConfigError(f"{gpu.name} has no bf16 support: use --precision fp16 or fp16-mixed (and --adapter-dtype fp32 or fp16)")


def _corrections(gpu: GpuSpec, db_path):
    from ..calibrate.lookup import corrections_for

    return corrections_for(gpu, db_path)


def _short_name(spec: ModelSpec) -> str:
    return spec.name.rsplit("/", 1)[-1] if spec.source == "catalog" else spec.name


# --- sections -------------------------------------------------------------------------------


def _overview(resolved, gpus, run: RunConfig, methods, corrections, store_note: str, results) -> Section:
    spec = resolved.spec
    ref_results = results[_ref_key(gpus)]
    first = ref_results[0].estimate
    facts = [
        ("model", spec.name),
        ("resolved from", resolved.note),
        ("parameters", f"{_params(spec.base_params)} ({spec.base_params:,})"),
        ("architecture", f"{spec.model_type}, {spec.num_layers} layers, hidden {spec.hidden_size:,}, vocab {spec.vocab_size:,}"),
        ("methods", ", ".join(charts.method_title(m) for m in methods)),
    ]
    for gpu in gpus:
        facts.append((f"GPU {gpu.key}", f"{gpu.name}: {gpu.total_bytes / GIB:.2f} GiB ({gpu.total_bytes:,} bytes), {'bf16' if gpu.bf16 else 'no bf16'}"))
    facts += [
        ("step", f"batch {run.batch} × {run.seq_len} tokens, gradient checkpointing {'on' if run.grad_ckpt else 'off'}, "
                 f"{run.optimizer}, {run.precision}, {run.attention} attention"),
        ("adapters", adapter_lines([r.estimate for r in ref_results]) or "none"),
        ("transformers", stack_line(run)),  # whose memory paths were modelled (planner/stack.py)
    ]
    for gpu in gpus:
        facts.append((f"calibration {gpu.key}", getattr(corrections.get(gpu.key), "source", None) or results[gpu.key][0].estimate.calibration))
    if not gpus:
        facts.append(("GPU", "none given: no GPU memory lines, no fit table"))
    facts.append(("measurement store", store_note))
    return Section(
        heading="What was estimated",
        anchor="overview",
        paragraphs=(
            "Every memory figure is in GiB (2^30 bytes). 'Device used' is what nvidia-smi would show for the training "
            "process: the peak of live tensors (allocated), plus the caching allocator's slack (reserved), plus memory "
            "outside torch's allocator (CUDA context, paged optimizer states). A run fits when device used is at most the "
            "GPU's memory as the driver reports it.",
            f"Calibration: {first.calibration}." if len(gpus) <= 1 else "Each GPU uses its own calibration, listed below.",
        ),
        facts=tuple(facts),
    )


def _ref_key(gpus):
    """The key of the GPU whose numbers the charts show; None when there is no GPU (estimate without --gpu)."""
    return gpus[0].key if gpus else None


def _methods_section(gpus, methods, results) -> Section:
    ref_results = results[_ref_key(gpus)]
    calibrated_for = f"overheads as calibrated for {gpus[0].name}" if gpus else "default overheads (no GPU given)"
    names: list[str] = []
    for result in ref_results:
        for term in result.estimate.breakdown.terms:
            if term.name not in names:
                names.append(term.name)
    names.sort(key=charts.term_sort_key)  # stable: first appearance within a family
    terms = []
    for name in names:
        bytes_by_method, notes = {}, {}
        for method, result in zip(methods, ref_results):
            breakdown = result.estimate.breakdown
            bytes_by_method[method] = breakdown.at_peak().get(name, 0)
            notes[method] = next((t.note for t in breakdown.terms if t.name == name), "")
        terms.append({"name": name, "bytes": bytes_by_method, "notes": notes})
    totals = {m: r.estimate.breakdown.device_used_bytes for m, r in zip(methods, ref_results)}
    phases = {m: r.estimate.breakdown.peak_phase for m, r in zip(methods, ref_results)}
    run = ref_results[0].estimate.run
    figure = charts.methods_figure(
        list(methods), terms, totals, phases, gpus,
        title=f"Peak GPU memory by method, term by term: {_short_name(ref_results[0].estimate.model)}",
        subtitle=f"batch {run.batch} × {run.seq_len} tokens, {run.precision}, rank {run.rank}; bars total device used; dashed lines: GPU memory",
    )
    rows = []
    for term in terms:
        if not any(term["bytes"].values()):
            continue
        rows.append((term["name"], *[_bytes_cell(term["bytes"][m]) if term["bytes"][m] else Cell("-") for m in methods]))
    breakdowns = [r.estimate.breakdown for r in ref_results]
    rows.append((Cell("peak allocated", cls="strong"), *[_bytes_cell(b.peak_allocated_bytes) for b in breakdowns]))
    rows.append(("peak reserved", *[_bytes_cell(b.peak_reserved_bytes) for b in breakdowns]))
    rows.append(("device used", *[_bytes_cell(b.device_used_bytes) for b in breakdowns]))
    rows.append(("peak phase", *[b.peak_phase for b in breakdowns]))
    rows.append(("trainable params", *[f"{r.estimate.trainable_params:,}" for r in ref_results]))
    term_table = Table(
        columns=("term (GiB at the peak)", *[charts.method_title(m) for m in methods]),
        rows=tuple(rows),
        caption=f"Bytes at each method's peak, GiB to 3 decimals (hover a cell for exact bytes); {calibrated_for}.",
    )
    fit_rows = []
    for gpu in gpus:
        for method, result in zip(methods, results[gpu.key]):
            est = result.estimate
            fit_rows.append((
                gpu.name, charts.method_title(method),
                _bytes_cell(est.breakdown.device_used_bytes, 2),
                Cell(f"{gpu.total_bytes / GIB:.2f}", title=f"{gpu.total_bytes:,} bytes"),
                _fit_cell(est.headroom_bytes),
                str(result.max_batch) if result.max_batch is not None else "-",
                f"{result.max_seq_len:,}" if result.max_seq_len is not None else "-",
            ))
    fit_table = Table(
        columns=("GPU", "method", "device used, GiB", "GPU memory, GiB", "fits? headroom, GiB", f"max batch at {run.seq_len:,} tokens", f"max seq len at batch {run.batch}"),
        rows=tuple(fit_rows),
        numeric=(False, False, True, True, True, True, True),
        caption="Per GPU: does the run fit, and the largest batch and sequence length that would (0: not even 1).",
    )
    return Section(
        heading="Methods side by side",
        anchor="methods",
        paragraphs=(
            "Each bar stacks the named terms of the estimate as they stand at that method's peak phase of a training step; "
            "its height is the predicted device-used peak. Terms of one kind share a colour family (weights blue, gradients "
            "orange, optimizer green, activations purple, overhead grey). Hover a segment for its exact bytes and what it is.",
        ),
        charts=(Chart(figure, term_table),),
        tables=(fit_table,) if gpus else (),
    )


def _sweeps_section(spec: ModelSpec, run: RunConfig, gpus, methods, corrections) -> Section | None:
    reference = gpus[0] if gpus else None
    chart_list = []
    for sweep in comparison.sweeps(spec, run, methods, reference, corrections.get(_ref_key(gpus))):
        shown = list(sweep.series)
        what = {"rank": "LoRA rank", "batch": "micro-batch size", "seq_len": "sequence length"}[sweep.field]
        no_rank = f"; {', '.join(charts.method_title(m) for m in sweep.skipped)} have no rank" if sweep.skipped else ""
        figure = charts.sweep_figure(
            sweep.label, list(sweep.xs), sweep.series, gpus, sweep.current,
            title=f"Predicted peak (device used) vs {what}",
            subtitle=f"{_short_name(spec)}; other settings as in this run{no_rank}",
        )
        rows = tuple(
            (Cell(f"{x:,}" + (" (this run)" if x == sweep.current else "")), *[_bytes_cell(sweep.series[m][i], 2) for m in shown])
            for i, x in enumerate(sweep.xs)
        )
        limits = "; ".join(f"{g.name} {g.total_bytes / GIB:.2f} GiB" for g in gpus)
        table = Table(
            columns=(sweep.label, *[f"{charts.method_title(m)}, GiB" for m in shown]),
            rows=rows,
            caption="Predicted device-used peak, GiB." + (f" GPU memory: {limits}." if gpus else ""),
        )
        chart_list.append(Chart(figure, table))
    if not chart_list:
        return None
    return Section(
        heading="How the settings move the peak",
        anchor="sweeps",
        paragraphs=(
            "One setting changes at a time; everything else stays as in this run. Where a line crosses a GPU's dashed line, "
            "that setting stops fitting. " + (f"Overheads as calibrated for {reference.name}." if reference else "Default overheads (no GPU given)."),
        ),
        charts=tuple(chart_list),
    )


def _fit_matrix_section(spec: ModelSpec, run: RunConfig, gpus, methods, corrections) -> Section:
    models = comparison.fit_models(spec)
    labels = [
        f"{_short_name(m)} · {_params(m.base_params)}" + (" (this report)" if m.name == spec.name else "") for m in models
    ]
    headroom = comparison.fit_headroom(models, run, methods, gpus, corrections)
    figure = charts.fit_matrix_figure(
        labels, gpus, list(methods), headroom,
        title="Which models fit: headroom per model, GPU and method",
        subtitle=f"GiB left after the predicted device-used peak; ✓ fits, ✗ does not; batch {run.batch} × {run.seq_len} tokens, rank {run.rank}",
    )
    columns = ["model"] + [f"{g.key} · {charts.method_title(m)}" for g in gpus for m in methods]
    rows = tuple(
        (label, *[_fit_cell(headroom[(i, g.key, m)]) for g in gpus for m in methods]) for i, label in enumerate(labels)
    )
    table = Table(
        columns=tuple(columns),
        rows=rows,
        caption="Headroom in GiB (GPU memory minus predicted device used): ✓ fits, ✗ does not. Hover for exact bytes.",
    )
    return Section(
        heading="Which models fit",
        anchor="fit-matrix",
        paragraphs=(
            "A handful of catalog models from 1B to 70B parameters (and this report's model), with this run's settings, on "
            "each chosen GPU. Colour saturates at half the largest GPU's memory; the number in each cell is the exact headroom.",
        ),
        charts=(Chart(figure, table),),
    )


SOURCE_NOTES = {
    "cpu": "cpu runs are small probe models measured by the live-tensor tracker",
    "trace": "trace runs are full-size models traced on fake tensors",
    "cuda": "cuda runs are real GPU steps (torch.cuda.max_memory_allocated)",
}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} %"


def _trust_section(db_path, current: bool = False, label: str | None = None) -> Section | None:
    from ..calibrate.report import error_rows, summarize
    from ..calibrate.store import Store

    with Store.open(db_path) as store:
        records = store.runs()
    if not records:
        return None
    rows = error_rows(records, current=current)
    points = [
        {
            "method": r["method"], "source": r["source"], "estimated_bytes": r["estimated_bytes"], "measured_bytes": r["measured_bytes"],
            "label": f"run #{r['id']}: {r['model']} on {r['device']}",
        }
        for r in rows
        if r["outcome"] == "ok" and r["error_pct"] is not None
    ]
    if not points:
        return None
    figure = charts.trust_figure(
        points,
        title="How far to trust the estimate: estimated vs measured peak allocated",
        subtitle=f"{len(points)} measured runs from the store, by method (colour) and source (shape); shaded: within ±5 % of measured",
    )
    summary = summarize(rows)
    summary_table = Table(
        columns=("source", "method", "runs", "median |error|", "worst |error|", "median calibrated", "worst calibrated", "reserved median", "device median"),
        rows=tuple(
            (s.source, charts.method_title(s.method), str(s.count), _pct(s.median_abs_pct), _pct(s.worst_abs_pct),
             _pct(s.median_abs_pct_calibrated), _pct(s.worst_abs_pct_calibrated), _pct(s.median_abs_pct_reserved), _pct(s.median_abs_pct_device))
            for s in summary
        ),
        numeric=(False, False, True, True, True, True, True, True, True),
        caption="Error of the estimate stored with each run against the measurement (|error| in % of measured), per source and method. "
                "'Calibrated' columns are leave-one-config-out: each run predicted from a fit that did not see it.",
    )
    run_table = Table(
        columns=("run", "source", "method", "model", "device", "outcome", "estimated, GiB", "measured, GiB", "error", "calibrated error"),
        rows=tuple(
            (str(r["id"]), r["source"], charts.method_title(r["method"] or "-"), r["model"], r["device"], r["outcome"],
             _bytes_cell(r["estimated_bytes"]), _bytes_cell(r["measured_bytes"]),
             "-" if r["error_pct"] is None else f"{r['error_pct']:+.1f} %",
             "-" if r["calibrated_error_pct"] is None else f"{r['calibrated_error_pct']:+.1f} %")
            for r in rows
        ),
        numeric=(True, False, False, False, False, False, True, True, True, True),
        caption="Every stored run (oom and error runs have no measurement).",
    )
    excluded = len(rows) - len(points)
    sources = {p["source"] for p in points}
    return Section(
        heading="How far to trust the estimates",
        anchor="trust",
        paragraphs=(
            f"Measured runs from {label or db_path}: " + "; ".join(SOURCE_NOTES[source] for source in SOURCE_NOTES if source in sources) + ". "
            + ("The estimate is this version's re-estimate of each stored run (--current). " if current else
               "The estimate is the one stored with each run, made before it ran. ")
            + "Points on the dashed line are exact; the shaded "
            "band is ±5 % of measured. The lower panel shows the same runs' error in %."
            + (f" {excluded} stored run{'s have' if excluded != 1 else ' has'} no measurement (oom or error)." if excluded else ""),
        ),
        charts=(Chart(figure, summary_table),),
        details=((f"All {len(rows)} stored runs", run_table),),
    )


# --- entry points ---------------------------------------------------------------------------


def build_report(model_name: str, gpu_keys, run: RunConfig, methods, db_path=None, run_dir=None) -> str:
    """The whole HTML report for one model, one run's settings, several GPUs and methods.

    With `run_dir` (a `vramplan run` output directory) a Run section follows: its marker, and
    the run's store record when `db_path` is given.

    Raises:
        VramplanError: an unknown model or GPU, a method that does not exist, bf16 on a GPU
            without it, or an unusable measurement store.
    """
    resolved = resolve_model(model_name)
    keys = list(dict.fromkeys(k for k in gpu_keys if str(k).strip()))
    if not keys:
        raise ConfigError("give at least one --gpu (e.g. --gpu t4 --gpu l4); see `vramplan gpus`")
    gpus: list[GpuSpec] = []
    for key in keys:
        gpu = resolve_gpu(key)
        if gpu.key not in [g.key for g in gpus]:
            gpus.append(gpu)
    methods = tuple(dict.fromkeys(methods)) or DEFAULT_METHODS
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"--method {','.join(unknown)!r} is not one of: {', '.join(METHODS)}")
    _check_precision(run, gpus)
    if db_path is not None:
        path = Path(db_path)
        if path.is_dir():
            raise ConfigError(f"--db {path} is a directory; give the measurement store file")
        if not path.exists():
            raise ConfigError(f"--db {path}: no such measurement store; run `vramplan calibrate --db {path}` first or leave --db out")
    if run_dir is not None:
        from .html_sections import check_run_dir

        check_run_dir(run_dir)

    from ..planner.limits import compare_methods

    corrections = {gpu.key: _corrections(gpu, db_path) for gpu in gpus}
    results = {gpu.key: compare_methods(resolved.spec, run, methods, gpu, corrections[gpu.key]) for gpu in gpus}
    trust = _trust_section(db_path) if db_path is not None else None
    if db_path is None:
        store_note = "none given (no trust section)"
    else:
        store_note = str(db_path) if trust is not None else f"{db_path} (no measured runs: no trust section)"
    sections = [
        _overview(resolved, gpus, run, methods, corrections, store_note, results),
        _methods_section(gpus, methods, results),
        _sweeps_section(resolved.spec, run, gpus, methods, corrections),
        _fit_matrix_section(resolved.spec, run, gpus, methods, corrections),
        trust,
    ]
    if run_dir is not None:
        from .html_sections import run_section

        sections.append(run_section(run_dir, db_path, use_store=db_path is not None))
    return render_page(
        f"GPU memory for fine-tuning {_short_name(resolved.spec)} on {spoken_list(g.name for g in gpus)}",
        sections,
        subtitle=f"{resolved.note} · {', '.join(charts.method_title(m) for m in methods)} · batch {run.batch} × {run.seq_len} tokens",
        footer=page_footer(),
    )


def page_footer() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"vramplan {version('vramplan')}"
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "vramplan"


def check_out_path(path, flag: str = "--out") -> Path:
    """Refuse an HTML path that cannot be written, before any work is done (`flag` names it in the error).

    Raises:
        ConfigError: the path is a directory or its folder does not exist.
        FileAccessError: the folder is read-only, not writable, or too full for the page (~5 MB).
    """
    from ..planner.files import check_output_file

    return check_output_file(path, flag, need_bytes=6 * 10**6)


def write_report(path, html: str, flag: str = "--out") -> int:
    """Write the report as UTF-8, whole or not at all; returns its size in bytes.

    Raises:
        ConfigError: the path is a directory or its folder does not exist.
        FileAccessError: the write failed (disk full, read-only); no temporary file is left behind.
    """
    from ..planner.files import atomic_write

    path = Path(path)
    if path.is_dir() or not path.parent.is_dir():
        check_out_path(path, flag)
    return atomic_write(path, html, flag)
