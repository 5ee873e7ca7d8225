"""Rich tables for `vramplan calibrate`: the error table and a one-trace comparison."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..calibrate.report import ErrorSummary

STAT_NOTE = (
    "|error| of the analytic peak allocated vs the measured one (cpu: peak live tensor bytes from the "
    "tracker; trace: the same on fake tensors at full size; cuda: torch.cuda.max_memory_allocated). "
    "'calibrated' columns are leave-one-config-out: each run is predicted from a fit that did not see it."
)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def render_error_table(console: Console, summaries: list[ErrorSummary], excluded: dict[str, int]) -> None:
    table = Table(title="Estimate vs measurement, peak allocated", title_justify="left")
    for column in ("source", "method", "runs", "median", "worst", "median calibrated", "worst calibrated", "reserved median", "device median"):
        table.add_column(column, justify="left" if column in ("source", "method") else "right")
    for s in summaries:
        table.add_row(s.source, s.method, str(s.count), _pct(s.median_abs_pct), _pct(s.worst_abs_pct),
                      _pct(s.median_abs_pct_calibrated), _pct(s.worst_abs_pct_calibrated),
                      _pct(s.median_abs_pct_reserved), _pct(s.median_abs_pct_device))
    console.print(table)
    if excluded:
        console.print("Not in the table: " + ", ".join(f"{n} {outcome}" for outcome, n in sorted(excluded.items())), style="dim")
    console.print(STAT_NOTE, style="dim")


def render_trace(console: Console, result: dict) -> None:
    title = f"Traced step: {result['model']} {result['method']}"
    if "stage" in result:  # a vision-language model: which stage, how many image tokens
        title += f", stage {result['stage']}, {result['image_tokens']:,} image tokens"
    table = Table(title=title, title_justify="left")
    table.add_column("")
    table.add_column("GiB", justify="right")
    table.add_row("traced peak allocated", f"{result['measured_bytes'] / 2**30:.3f}")
    table.add_row("estimated peak allocated", f"{result['estimated_bytes'] / 2**30:.3f}")
    table.add_row("error", f"{result['error_pct']:+.1f}%")
    console.print(table)
