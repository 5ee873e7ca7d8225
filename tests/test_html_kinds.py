"""The HTML pages of the other commands: `estimate --html`, `recommend --html`, `calibrate --report --html`,
`run --html`, and `report --run DIR`, opened in headless chromium with the checks of test_html_reports.

Screenshots go to $VRAMPLAN_SCREENSHOTS, else /tmp/vramplan-shots/, to be looked at.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

# the commands register themselves on the group when imported
import vramplan.calibrate_cmd
import vramplan.recommend_cmd
import vramplan.report_cmd
import vramplan.run_cmd  # noqa: F401

from .conftest import TINY_LLAMA
from .test_html_reports import (
    HOSTILE,
    HOSTILE_ESCAPED,
    assert_charts_drawn,
    chart_ids,
    error_line,
    invoke,
    needs_chromium,
    rendered_dom,
    screenshot,
    synthetic_store_fixture,
)
from .test_trainer import RUN_FLAGS, tiny  # noqa: F401  (fixtures: a tiny llama, its tokenizer and data)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def shots_folder(monkeypatch):
    monkeypatch.setenv("VRAMPLAN_SCREENSHOTS", os.environ.get("VRAMPLAN_SCREENSHOTS", "/tmp/vramplan-shots"))


def wrote_line(result, path) -> None:
    assert result.exit_code == 0, result.output
    assert f"Wrote {path} (" in result.output and "bytes)" in result.output, result.output


def self_contained(page: str) -> None:
    """plotly.js inline, nothing fetched from anywhere."""
    assert "<script src" not in page and 'src="http' not in page and page.count("Plotly.newPlot(") >= 1


@needs_chromium
def test_estimate_page(tmp_path):
    out = tmp_path / "estimate.html"
    result = invoke("estimate", "--model", "8b", "--gpu", "t4", "--method", "lora,qlora", "--html", out)
    wrote_line(result, out)
    assert "Peak memory per term" in result.output  # the normal table is still printed
    page = out.read_text(encoding="utf-8")
    self_contained(page)
    for heading in ("What was estimated", "Methods side by side", "How the settings move the peak"):
        assert f"<h2>{heading}</h2>" in page
    assert "Which models fit" not in page and "NVIDIA Tesla T4" in page
    dom = rendered_dom(out, tmp_path)
    assert_charts_drawn(page, dom, expected=4)  # methods; rank, batch and sequence-length sweeps
    screenshot(out, tmp_path, "estimate-8b-t4.png")


def test_estimate_page_without_gpu_and_json_stays_parseable(tmp_path):
    out = tmp_path / "e.html"
    result = invoke("estimate", "--model", "1b", "--method", "qlora", "--json", "--html", out)
    assert result.exit_code == 0, result.output
    assert out.exists() and "(no GPU given)" in out.read_text(encoding="utf-8")
    assert len(chart_ids(out.read_text(encoding="utf-8"))) == 4


@needs_chromium
def test_recommend_page(tmp_path):
    out = tmp_path / "recommend.html"
    result = invoke("recommend", "--model", "8b", "--gpu", "t4", "--dataset-size", "5000", "--html", out)
    wrote_line(result, out)
    assert "Recommended" in result.output
    page = out.read_text(encoding="utf-8")
    self_contained(page)
    assert "<h2>Recommendation</h2>" in page and "within margin" in page and "fit limit" in page
    assert "<li>targets all-linear: all-linear beats attention-only at equal memory</li>" in page  # a reason, as a list item
    dom = rendered_dom(out, tmp_path)
    assert_charts_drawn(page, dom, expected=1)
    screenshot(out, tmp_path, "recommend-8b-t4.png")


@needs_chromium
def test_calibrate_report_page(tmp_path):
    db = synthetic_store_fixture(tmp_path / "synthetic-fixture.db")
    out = tmp_path / "trust.html"
    result = invoke("calibrate", "--report", "--db", db, "--html", out)
    wrote_line(result, out)
    page = out.read_text(encoding="utf-8")
    self_contained(page)
    assert "<h2>How far to trust the estimates</h2>" in page and "synthetic fixture device" in page
    dom = rendered_dom(out, tmp_path)
    assert_charts_drawn(page, dom, expected=1)
    screenshot(out, tmp_path, "calibrate-report.png")


@needs_chromium
def test_run_page_and_report_run_section(tiny, tmp_path):  # noqa: F811
    run_dir, db, out = tmp_path / "run", tmp_path / "runs.db", tmp_path / "run.html"
    result = invoke("run", "--model", tiny["model"], "--data", tiny["data"], "--out", run_dir, "--db", db, "--max-steps", 4,
                    "--lr", "0.01", "--no-progress", *RUN_FLAGS, "--html", out)
    wrote_line(result, out)
    assert "trained steps 0 -> 4 of 4" in result.output
    page = out.read_text(encoding="utf-8")
    self_contained(page)
    assert "<h2>Run</h2>" in page and "tokens/s" in page and "finished at step 4 of 4" in page
    assert "Training loss per optimizer step" in page and "Measured peak against the estimate" in page
    dom = rendered_dom(out, tmp_path)
    assert_charts_drawn(page, dom, expected=2)  # loss curve; estimated vs measured peak
    screenshot(out, tmp_path, "run-tiny-lora.png")

    # `report --run` with the store: the same Run section after the report's own
    report = tmp_path / "report.html"
    result = invoke("report", "--model", "1b", "--gpu", "t4", "--method", "lora", "--db", db, "--run", run_dir, "--out", report)
    wrote_line(result, report)
    page = report.read_text(encoding="utf-8")
    assert "<h2>Run</h2>" in page and "Training loss per optimizer step" in page
    assert len(chart_ids(page)) == 8  # methods, 3 sweeps, fit matrix, trust (the run's record), loss, peak

    # without --db: what the marker alone holds, and hostile directory names are escaped
    hostile = tmp_path / "<script>alert(1)<" / "script>"
    hostile.parent.mkdir()
    shutil.copytree(run_dir, hostile)
    bare = tmp_path / "bare.html"
    result = invoke("report", "--model", "1b", "--gpu", "t4", "--method", "lora", "--run", hostile, "--out", bare)
    wrote_line(result, bare)
    page = bare.read_text(encoding="utf-8")
    assert "<h2>Run</h2>" in page and "no --db given: the marker alone" in page and "Training loss" not in page
    assert HOSTILE not in page and HOSTILE_ESCAPED in page


def test_hostile_model_name_is_escaped_on_the_estimate_page(tmp_path):
    folder = tmp_path / "<script>alert(1)<" / "script>"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**TINY_LLAMA, "_name_or_path": HOSTILE}))
    out = tmp_path / "hostile.html"
    result = invoke("estimate", "--model", folder, "--gpu", "t4", "--html", out)
    wrote_line(result, out)
    page = out.read_text(encoding="utf-8")
    assert HOSTILE not in page and HOSTILE_ESCAPED in page


@pytest.mark.parametrize("args, expected", [
    (("estimate", "--model", "8b", "--gpu", "t4", "--html", "{tmp}/missing/p.html"),
     "Error: --html {tmp}/missing/p.html: the folder {tmp}/missing does not exist"),
    (("recommend", "--model", "8b", "--gpu", "t4", "--html", "{tmp}/missing/p.html"),
     "Error: --html {tmp}/missing/p.html: the folder {tmp}/missing does not exist"),
    (("calibrate", "--report", "--db", "{tmp}/runs.db", "--html", "{tmp}/missing/p.html"),
     "Error: --html {tmp}/missing/p.html: the folder {tmp}/missing does not exist"),
    (("run", "--model", "{tmp}/model", "--data", "{tmp}/train.jsonl", "--html", "{tmp}/missing/p.html"),
     "Error: --html {tmp}/missing/p.html: the folder {tmp}/missing does not exist"),
    (("estimate", "--model", "8b", "--html", "{tmp}"),
     "Error: --html {tmp} is a directory; give a file name such as {tmp}/report.html"),
    (("calibrate", "--db", "{tmp}/runs.db", "--html", "{tmp}/p.html"),
     "Error: --html goes with --report (the page shows the store's runs)"),
    (("report", "--model", "8b", "--gpu", "t4", "--run", "{tmp}/nothing", "--out", "{tmp}/p.html"),
     "Error: --run {tmp}/nothing: no such directory; give the --out directory of a `vramplan run`"),
    (("report", "--model", "8b", "--gpu", "t4", "--run", "{tmp}", "--out", "{tmp}/p.html"),
     "Error: --run {tmp}: no vramplan-run.json here; give the --out directory of a `vramplan run`"),
])
def test_html_errors_are_one_line(tmp_path, args, expected):
    result = invoke(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code != 0
    assert error_line(result) == expected.format(tmp=tmp_path)
    assert "Traceback" not in result.output
    assert not (tmp_path / "p.html").exists() and not (tmp_path / "runs.db").exists()
