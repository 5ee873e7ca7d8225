"""`vramplan report`: the HTML page opened in a real browser (Debian's chromium, headless).

The page must render every chart offline with no console message at all, escape whatever the
user typed, and the command must fail with one-line errors. The trust section is exercised on
a store filled by `synthetic_store_fixture`: made-up measurements, used only by these tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import uuid
from dataclasses import asdict
from pathlib import Path

import pytest
from click.testing import CliRunner

import vramplan.report_cmd  # noqa: F401  (registers `report` on the group)
from vramplan.calibrate.runner import model_for
from vramplan.calibrate.store import RunRecord, Store
from vramplan.cli import cli
from vramplan.planner.catalog import all_gpus
from vramplan.planner.estimator import estimate
from vramplan.planner.specs import RunConfig

from .conftest import TINY_LLAMA

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is missing: install Debian's chromium (apt-get install -y chromium) to run the browser checks",
)
HOSTILE = "<script>alert(1)</script>"
HOSTILE_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert lines, result.output
    return lines[-1]


# --- a synthetic measurement store (test fixture only: none of these numbers was measured) ---


def synthetic_store_fixture(path: Path) -> Path:
    """A store of made-up runs: the real estimate of each config, 'measured' off by a set amount."""
    offsets = (-0.07, -0.03, -0.01, 0.0, 0.02, 0.045, 0.09)
    configs = [
        ("cpu", "probe-llama", RunConfig(method=m, batch=b, seq_len=128, device_kind="cpu"))
        for m in ("full", "lora", "qlora") for b in (1, 2)
    ] + [
        ("trace", "meta-llama/Llama-3.2-1B", RunConfig(method=m, seq_len=s)) for m in ("lora", "qlora", "dora") for s in (512, 1024)
    ] + [
        ("cuda", "meta-llama/Llama-3.2-1B", RunConfig(method=m, seq_len=s)) for m in ("lora", "qlora") for s in (512, 2048)
    ]
    with Store.open(path) as store:
        for i, (source, model_name, run) in enumerate(configs):
            config, spec = model_for(model_name)
            predicted = estimate(spec, run).breakdown
            allocated = predicted.peak_allocated_bytes
            measured = int(allocated / (1 + offsets[i % len(offsets)]))
            store.add_run(RunRecord(
                source=source, outcome="ok", model_name=model_name, model_config=config, run_config=asdict(run),
                device_name="synthetic fixture device", stack="synthetic fixture", environment={"fixture": True},
                estimate={"terms": predicted.by_name()}, est_peak_allocated_bytes=allocated,
                est_peak_reserved_bytes=predicted.peak_reserved_bytes, est_device_used_bytes=predicted.device_used_bytes,
                peak_allocated_bytes=measured,
                peak_reserved_bytes=int(measured * 1.04) if source == "cuda" else None,
                device_used_bytes=int(measured * 1.04) + (400 << 20) if source == "cuda" else None,
            ))
        run = RunConfig(method="full", seq_len=4096)
        config, spec = model_for("meta-llama/Llama-3.2-1B")
        store.add_run(RunRecord(
            source="cuda", outcome="oom", error_message="OutOfMemoryError: synthetic fixture", model_name="meta-llama/Llama-3.2-1B",
            model_config=config, run_config=asdict(run), device_name="synthetic fixture device", stack="synthetic fixture",
            environment={"fixture": True}, estimate={}, est_peak_allocated_bytes=estimate(spec, run).breakdown.peak_allocated_bytes,
        ))
    return path


# --- the browser ---------------------------------------------------------------------------


def chromium(page: Path, tmp_path: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Open `page` headless, offline (every host name fails to resolve), logging the console to stderr."""
    profile = tmp_path / f"chromium-profile-{uuid.uuid4().hex[:8]}"
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
        "--enable-logging=stderr", "--v=0", "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars",
        "--virtual-time-budget=10000", *args, page.resolve().as_uri(),
    ]
    try:
        # headless chromium now and then hangs at start-up on a loaded machine (a page that renders in
        # 5 s alone): a hung browser is killed and started once more before the test fails
        for attempt in (1, 2):
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
            try:
                stdout, stderr = process.communicate(timeout=timeout)
                return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
                shutil.rmtree(profile, ignore_errors=True)
        pytest.fail(f"chromium did not finish {page.name} in {timeout} s, twice")
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def console_lines(stderr: str) -> list[str]:
    """Everything the page wrote to its console (errors, warnings, logs): a clean page writes nothing."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def rendered_dom(page: Path, tmp_path: Path) -> str:
    result = chromium(page, tmp_path, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    assert not console_lines(result.stderr), "console messages:\n" + "\n".join(console_lines(result.stderr))
    return result.stdout


def chart_ids(page_html: str) -> list[str]:
    return re.findall(r'Plotly\.newPlot\(\s*"([^"]+)"', page_html)


def assert_charts_drawn(page_html: str, dom: str, expected: int) -> None:
    """plotly drew every chart: its div holds main-svg nodes and at least one trace or heatmap."""
    ids = chart_ids(page_html)
    assert len(ids) == expected, ids
    starts = [dom.index(f'id="{chart_id}"') for chart_id in ids]
    ends = starts[1:] + [dom.index("</main>")]
    for chart_id, start, end in zip(ids, starts, ends):
        segment = dom[start:end]
        assert 'class="main-svg"' in segment, f"{chart_id}: plotly drew no SVG"
        assert re.search(r'class="(trace |hm")', segment), f"{chart_id}: the SVG holds no trace"


def screenshot(page: Path, tmp_path: Path, name: str) -> Path:
    """Save a screenshot (kept in $VRAMPLAN_SCREENSHOTS when set, else in the test's tmp dir)."""
    folder = Path(os.environ.get("VRAMPLAN_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    result = chromium(page, tmp_path, f"--screenshot={path}", "--window-size=1400,2600", "--run-all-compositor-stages-before-draw")
    assert result.returncode == 0, result.stderr[-2000:]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 50_000, "the screenshot looks blank"
    return path


# --- tests ---------------------------------------------------------------------------------


@needs_chromium
def test_report_renders_every_chart_offline_without_console_messages(tmp_path):
    db = synthetic_store_fixture(tmp_path / "synthetic-fixture.db")
    out = tmp_path / "report.html"
    result = invoke("report", "--model", "8b", "--gpu", "t4", "--gpu", "l4", "--db", db, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Wrote {out} (") and "bytes)" in result.output
    page = out.read_text(encoding="utf-8")
    # self-contained: plotly.js inline once, nothing fetched from anywhere
    assert page.count("<script") == page.count("<script>") and "src=" not in re.sub(r"<script>.*?</script>", "", page, flags=re.S)
    assert page.count("Plotly.newPlot(") == 6 and len(re.findall(r"<script>/\*\*\s*\n\* plotly\.js", page)) <= 1
    for heading in ("Methods side by side", "How the settings move the peak", "Which models fit", "How far to trust the estimates"):
        assert f"<h2>{heading}</h2>" in page
    assert "NVIDIA Tesla T4" in page and "NVIDIA L4" in page and "synthetic fixture device" in page
    assert "<table>" in page and page.count("<table>") >= 7  # numbers under every chart
    dom = rendered_dom(out, tmp_path)
    assert_charts_drawn(page, dom, expected=6)
    shot = screenshot(out, tmp_path, "report-8b-t4-l4.png")
    print(f"screenshot: {shot}")


@needs_chromium
def test_console_check_sees_errors(tmp_path):
    """The browser check is not vacuous: an error on the page shows up in the console lines."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>console.error('boom'); undefinedFunction();</script></body></html>")
    result = chromium(page, tmp_path, "--dump-dom")
    lines = console_lines(result.stderr)
    assert any("boom" in line for line in lines) and any("undefinedFunction" in line for line in lines), result.stderr[-2000:]


@needs_chromium
def test_hostile_model_name_is_escaped(tmp_path):
    folder = tmp_path / "<script>alert(1)<" / "script>"  # the path spells <script>alert(1)</script>
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**TINY_LLAMA, "_name_or_path": HOSTILE}))
    out = tmp_path / "hostile.html"
    result = invoke("report", "--model", folder, "--gpu", "t4", "--out", out)
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert HOSTILE not in page
    assert HOSTILE_ESCAPED in page
    assert re.search(re.escape(HOSTILE_ESCAPED) + r" · [0-9.]+[BM] \(this report\)", page)  # its row in the fit matrix
    dom = rendered_dom(out, tmp_path)
    assert HOSTILE not in dom  # no script element was made from the name
    assert_charts_drawn(page, dom, expected=5)


def test_sections_appear_only_with_data(tmp_path):
    out = tmp_path / "qlora.html"
    result = invoke("report", "--model", "1b", "--gpu", "l4", "--method", "full", "--out", out)
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert "How far to trust" not in page  # no --db: no trust section
    assert "vs LoRA rank" not in page  # full fine-tuning alone: no rank sweep
    assert len(chart_ids(page)) == 4  # methods, batch, sequence length, fit matrix
    assert "GiB" in page and "bf16" in page  # L4 runs bf16 by default


def test_t4_gets_fp16_by_default(tmp_path):
    out = tmp_path / "r.html"
    result = invoke("report", "--model", "1b", "--gpu", "l4,t4", "--method", "qlora", "--out", out)
    assert result.exit_code == 0, result.output
    assert "fp16, sdpa attention" in out.read_text(encoding="utf-8")


def test_every_memory_axis_says_gib_and_terms_keep_their_colour():
    from vramplan.planner.catalog import resolve_gpu, resolve_model
    from vramplan.planner.limits import compare_methods
    from vramplan.reports import html_charts as charts

    spec, t4 = resolve_model("1b").spec, resolve_gpu("t4")
    results = compare_methods(spec, RunConfig(precision="fp16"), ("full", "qlora"), t4)
    terms = [{"name": t.name, "bytes": {r.estimate.run.method: r.estimate.breakdown.at_peak()[t.name] for r in results}, "notes": {}}
             for t in results[0].estimate.breakdown.terms]
    totals = {r.estimate.run.method: r.estimate.breakdown.device_used_bytes for r in results}
    bars = charts.methods_figure(["full", "qlora"], terms, totals, {}, [t4], "t")
    sweep = charts.sweep_figure("batch", [1, 2], {"qlora": [3 << 30, 5 << 30]}, [t4], 1, "t")
    matrix = charts.fit_matrix_figure(["a"], [t4], ["qlora"], {(0, "t4", "qlora"): 1 << 30}, "t")
    trust = charts.trust_figure([{"method": "lora", "source": "cpu", "estimated_bytes": 2 << 20, "measured_bytes": 3 << 20, "label": "x"}], "t")
    assert "GiB" in bars.layout.yaxis.title.text and "GiB" in sweep.layout.yaxis.title.text
    assert "GiB" in matrix.data[0].colorbar.title.text
    assert "GiB" in trust.layout.xaxis2.title.text and "GiB" in trust.layout.yaxis.title.text
    colours = {bar.name: bar.marker.color for bar in bars.data}
    assert colours["weights/base"] == charts.term_color("weights/base") != colours["optimizer/states"]
    assert charts.term_color("weights/base") in charts.FAMILY_SHADES["weights"]
    assert charts.term_color("activations/something_new") in charts.FAMILY_SHADES["activations"]


def test_empty_store_gives_no_trust_section(tmp_path):
    db = tmp_path / "empty.db"
    Store.open(db).close()
    out = tmp_path / "r.html"
    result = invoke("report", "--model", "1b", "--gpu", "t4", "--method", "qlora", "--db", db, "--out", out)
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert "How far to trust" not in page and "no measured runs: no trust section" in page


def _known_gpus() -> str:
    return ", ".join(gpu.key for gpu in all_gpus())


@pytest.mark.parametrize("args, expected", [
    (("--model", "8b", "--gpu", "t4"), "Error: Missing option '--out' / '-o'."),
    (("--model", "8b", "--gpu", "t5", "--out", "{tmp}/r.html"),
     "Error: unknown GPU 't5': did you mean t4? known: {known}; or give --gpu-mem 22GiB"),
    (("--model", "8b", "--gpu", "a100", "--out", "{tmp}/r.html"), "Error: --gpu 'a100' is ambiguous: choose one of a100-40gb, a100-80gb"),
    (("--model", "8b", "--gpu", "t4", "--precision", "bf16", "--out", "{tmp}/r.html"),
     "Error: NVIDIA Tesla T4 has no bf16 support: use --precision fp16 or fp16-mixed (and --adapter-dtype fp32 or fp16)"),
    (("--model", "8b", "--gpu", "t4", "--method", "lora,foo", "--out", "{tmp}/r.html"),
     "Error: --method 'foo' is not one of: full, lora, qlora, dora, qdora, adapter, adapter-pfeiffer, qadapter"),
    (("--model", "8b", "--gpu", "t4", "--db", "{tmp}/none.db", "--out", "{tmp}/r.html"),
     "Error: --db {tmp}/none.db: no such measurement store; run `vramplan calibrate --db {tmp}/none.db` first or leave --db out"),
    (("--model", "8b", "--gpu", "t4", "--out", "{tmp}/missing/r.html"), "Error: --out {tmp}/missing/r.html: the folder {tmp}/missing does not exist"),
    (("--model", "8b", "--gpu", "t4", "--out", "{tmp}"), "Error: --out {tmp} is a directory; give a file name such as {tmp}/report.html"),
])
def test_report_errors_are_one_line(tmp_path, args, expected):
    fill = {"tmp": str(tmp_path), "known": _known_gpus()}
    result = invoke("report", *[a.format(**fill) for a in args])
    assert result.exit_code != 0
    assert error_line(result) == expected.format(**fill)
    assert "Traceback" not in result.output
    assert not (tmp_path / "r.html").exists()
