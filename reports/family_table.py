"""The per-family error table of `vramplan calibrate --report`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..calibrate.family_report import FamilySummary


def render_family_table(console: Console, summaries: list[FamilySummary]) -> None:
    table = Table(title="Estimate vs measurement per model family, peak allocated", title_justify="left")
    for column in ("source", "family", "runs", "median", "worst", "models"):
        table.add_column(column, justify="right" if column in ("runs", "median", "worst") else "left")
    for s in summaries:
        table.add_row(s.source, s.family, str(s.count), f"{s.median_abs_pct:.1f}%", f"{s.worst_abs_pct:.1f}%", ", ".join(s.models))
    console.print(table)
