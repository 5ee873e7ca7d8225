"""The rich table of `vramplan estimate`: one row per term, one column per method."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..planner.savers import host_bytes
from ..planner.breakdown import ALLOCATED
from ..planner.limits import MethodResult
from ..planner.moe import routing_line
from .estimate_json import stack_dict
from ..planner.units import GIB, format_gib

TERM_ORDER = ["weights", "experts", "grads", "optimizer", "activations", "distributed", "overhead"]


def saver_labels(run) -> list[str]:
    """The memory savers a run uses, as the settings line shows them."""
    labels = []
    if run.loss != "standard":
        labels.append(f"{run.loss} loss" + (f" ({run.loss_chunk} tokens a chunk)" if run.loss == "chunked" else ""))
    labels += [name for name, on in (("offloaded activations", run.offload_activations), ("packing", run.packing), ("expandable segments", run.expandable_segments)) if on]
    if not run.kbit_upcast and run.method_record.quantizes_base:
        labels.append("no kbit upcast")  # --no-kbit-upcast: 16-bit embeddings, norms and head on the 4-bit base
    return labels

def _gib_cell(n_bytes: int, live: bool) -> Text:
    if n_bytes == 0:
        return Text("-", style="dim")
    text = f"{n_bytes / GIB:.2f}"
    return Text(text) if live else Text(f"({text})", style="dim")


def _settings_line(results: list[MethodResult], model_note: str) -> str:
    est = results[0].estimate
    run = est.run
    line = (
        f"model {model_note} · {est.model.base_params / 1e9:.2f}B params\n"
        f"batch {run.batch}{f' x {run.grad_accum} accumulated' if run.grad_accum > 1 else ''} · seq {run.seq_len} · grad-ckpt {'on' if run.grad_ckpt else 'off'} · "
        f"{run.optimizer} · {run.precision} · {run.attention} attention"
    )
    savers = saver_labels(run)
    if savers:
        line += " · " + " · ".join(savers)
    line += "\n" + stack_line(run)
    routing = routing_line(est.model, run)  # mixtures of experts only
    if routing:
        line += "\n" + routing
    adapters = adapter_lines([r.estimate for r in results])
    return line + (f"\nadapters: {adapters}" if adapters else "")


def stack_line(run) -> str:
    """Which transformers version's memory paths the estimate models (planner/stack.py)."""
    return stack_text(stack_dict(run))


def stack_text(stack: dict) -> str:
    """One line from a document's `stack` object (estimate and recommend print the same)."""
    source = {"flag": "--transformers-version", "installed": "installed", "default": "none installed: the version the estimator was built for"}[stack["source"]]
    return f"modelled for transformers {stack['transformers']} ({source}) · loss: {stack['loss_path']}"


def adapter_lines(estimates) -> str:
    """Each distinct adapter setting of the compared methods, and NF4's when a method quantizes."""
    described = [e.run.method_record.adapter.describe(e.model, e.run, e.adapted) for e in estimates if e.run.has_adapter]
    kinds: dict[str, list[str]] = {}  # the same settings under several kinds once: "LoRA/DoRA r=16 ..."
    for line in dict.fromkeys(described):
        kind, _, settings = line.partition(" ")
        kinds.setdefault(settings, []).append(kind)
    text = "; ".join(f"{'/'.join(names)} {settings}" for settings, names in kinds.items())
    quantized = next((e.run for e in estimates if e.run.is_quantized), None)
    if quantized is not None:
        text += f" · NF4 {'double-quant' if quantized.double_quant else 'single-quant'}"
    return text


def estimate_table(results: list[MethodResult]) -> Table:
    gpu = results[0].estimate.gpu
    title = "Peak memory per term (GiB, 2^30 bytes)"
    parallel = results[0].parallel
    if parallel is not None:
        title += f", per GPU of {parallel.gpus} ({parallel.strategy}" + (f", {parallel.offload} offloaded" if parallel.offload != "none" else "") + ")"
    if gpu is not None:
        title += f" on {gpu.name}, {format_gib(gpu.total_bytes)}"
    table = Table(title=title, title_justify="left")
    table.add_column("term", no_wrap=True)
    for result in results:
        table.add_column(result.estimate.run.method_record.title, justify="right")
    names: list[str] = []
    for result in results:
        for term in result.estimate.breakdown.terms:
            if term.name not in names:
                names.append(term.name)
    names.sort(key=lambda name: TERM_ORDER.index(name.split("/")[0]) if name.split("/")[0] in TERM_ORDER else len(TERM_ORDER))
    for name in names:
        cells = []
        for result in results:
            breakdown = result.estimate.breakdown
            term = next((t for t in breakdown.terms if t.name == name), None)
            if term is None:
                cells.append(Text("-", style="dim"))
            else:
                live = term.stat != ALLOCATED or breakdown.peak_phase in term.phases
                cells.append(_gib_cell(term.bytes, live))
        table.add_row(name, *cells)
    table.add_section()
    rows = [
        ("trainable", lambda r: f"{r.estimate.trainable_params / 1e6:,.1f}M"),
        ("peak phase", lambda r: r.estimate.breakdown.peak_phase),
        ("peak allocated", lambda r: f"{r.estimate.breakdown.peak_allocated_bytes / GIB:.2f}"),
        ("peak reserved", lambda r: f"{r.estimate.breakdown.peak_reserved_bytes / GIB:.2f}"),
        ("device used", lambda r: f"{r.estimate.breakdown.device_used_bytes / GIB:.2f}"),
    ]
    if parallel is not None and parallel.offload != "none":
        rows.append(("host RAM (node)", lambda r: f"{r.host_bytes / GIB:.2f}"))
    if any(host_bytes(r.estimate.breakdown.terms) for r in results):
        rows.append(("host RAM (activations)", lambda r: f"{host_bytes(r.estimate.breakdown.terms) / GIB:.2f}"))
    for label, cell in rows:
        table.add_row(label, *[cell(result) for result in results])
    if gpu is not None:
        table.add_section()
        table.add_row("GPU capacity", *[f"{gpu.total_bytes / GIB:.2f}" for _ in results])
        table.add_row("fits?", *[_fits_cell(result) for result in results])
        table.add_row("max batch", *[_limit(result.max_batch) for result in results])
        table.add_row("max seq len", *[_limit(result.max_seq_len) for result in results])
    return table


def _fits_cell(result: MethodResult) -> Text:
    headroom = result.estimate.headroom_bytes or 0
    if result.estimate.fits:
        return Text(f"yes, {headroom / GIB:.1f} free", style="bold green")
    return Text(f"no, {-headroom / GIB:.1f} over", style="bold red")


def _limit(value: int | None) -> Text:
    if not value:
        return Text("none", style="red")
    return Text(f"{value:,}")


FOOTNOTE = (
    "Values in (parentheses) are not live at that method's peak phase. peak allocated predicts "
    "torch.cuda.max_memory_allocated; peak reserved predicts max_memory_reserved; device used is what "
    "nvidia-smi shows (CUDA context and paged optimizer memory included). Calibration: {calibration}."
)


def render_estimate(console: Console, results: list[MethodResult], model_note: str) -> None:
    """Print the settings, the table and the footnote."""
    footnote = Text(FOOTNOTE.format(calibration=results[0].estimate.calibration), style="dim")
    console.print(Group(Text(_settings_line(results, model_note)), estimate_table(results), footnote))
