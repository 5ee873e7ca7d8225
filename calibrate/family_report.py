"""The error table per model family: a planner is only as good as its worst family (issue 13).

Groups the rows of `calibrate.report.error_rows` by the `model_type` of the config each run
measured (a probe or a full-size model of that family) and by source (cpu, trace, cuda).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from vramplan.planner.families import family_of

from .store import RunRecord


@dataclass(frozen=True)
class FamilySummary:
    family: str  # the family's title ("Gemma-2"), or the model_type when no record describes it
    model_type: str
    source: str
    count: int
    models: tuple[str, ...]
    median_abs_pct: float
    worst_abs_pct: float


def model_types(records: list[RunRecord]) -> dict[int, str]:
    """Run id -> the model_type of the config it measured."""
    return {record.id: str(record.model_config.get("model_type", "")) for record in records}


def family_summaries(rows: list[dict], types: dict[int, str]) -> list[FamilySummary]:
    """Median and worst |error| per (family, source) over the measured (ok) rows."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row["error_pct"] is not None and row["outcome"] == "ok":
            groups.setdefault((types.get(row["id"], ""), row["source"]), []).append(row)
    summaries = []
    for (model_type, source), group in sorted(groups.items(), key=lambda item: (item[0][1], item[0][0])):
        errors = [abs(row["error_pct"]) for row in group]
        family = family_of(model_type)
        summaries.append(FamilySummary(
            family=family.title if family is not None else (model_type or "?"),
            model_type=model_type,
            source=source,
            count=len(group),
            models=tuple(sorted({row["model"] for row in group})),
            median_abs_pct=statistics.median(errors),
            worst_abs_pct=max(errors),
        ))
    return summaries
