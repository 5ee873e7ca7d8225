"""Every model family of the catalog is measured, and each is held to the accuracy targets (issue 13).

Re-estimates the shipped CPU-measured and traced runs with the current model and groups them by
the family of the config each run measured. Copies only: shipped stores are never modified.
"""

import shutil
from pathlib import Path

import pytest

from vramplan.calibrate.family_report import family_summaries, model_types
from vramplan.calibrate.report import error_rows
from vramplan.calibrate.store import Store
from vramplan.planner.catalog.models import MODEL_CONFIGS

DATA = Path(__file__).resolve().parents[1] / "calibrate" / "data"
MEDIAN_PCT, WORST_PCT = 2.0, 5.0  # per family, both sources
# families every store must cover: each model_type of the text catalog
CATALOG_FAMILIES = {entry["config"]["model_type"] for entry in MODEL_CONFIGS.values()}
TRACED = CATALOG_FAMILIES  # every catalog family has full-size traces shipped (the MoE ones also in tests/test_moe_traces.py)


@pytest.fixture(scope="module")
def summaries(tmp_path_factory):
    out = {}
    for name in ("cpu-standard.db", "trace-standard.db"):
        copy = tmp_path_factory.mktemp("stores") / name
        shutil.copyfile(DATA / name, copy)
        with Store.open(copy) as store:
            records = store.runs()
        out[name] = family_summaries(error_rows(records, current=True), model_types(records))
    return out


def test_every_catalog_family_is_cpu_measured_within_bounds(summaries):
    by_type = {s.model_type: s for s in summaries["cpu-standard.db"]}
    assert CATALOG_FAMILIES <= set(by_type), CATALOG_FAMILIES - set(by_type)
    for s in by_type.values():
        assert s.count >= 7 and s.median_abs_pct <= MEDIAN_PCT and s.worst_abs_pct <= WORST_PCT, s


def test_traced_families_within_bounds(summaries):
    by_type = {s.model_type: s for s in summaries["trace-standard.db"]}
    assert TRACED <= set(by_type), TRACED - set(by_type)
    for s in by_type.values():
        assert s.median_abs_pct <= MEDIAN_PCT and s.worst_abs_pct <= WORST_PCT, s
