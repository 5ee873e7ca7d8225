"""VLM HTML pages in a real browser: `report` on a VLM (components per stage, resolution sweep),
a two-stage run's page from its store records, and `recommend --html`; user strings escaped.

The run records here are a test fixture: real estimates, made-up "measured" peaks and losses.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from vramplan.calibrate.store import RunRecord, Store
from vramplan.calibrate.trainer.marker import write_marker
from vramplan.planner.catalog import resolve_gpu, resolve_model
from vramplan.planner.catalog.vlm_models import VLM_CONFIGS
from vramplan.planner.specs import RunConfig
from vramplan.planner.vision import vlm_spec_for
from vramplan.planner.vision.run import VlmRun
from vramplan.planner.vlm_estimate import estimate_vlm
from vramplan.reports.vlm_html import sweep_sizes
from vramplan.reports.vlm_html_charts import PARTS, parts_at_peak

from .test_html_reports import (
    HOSTILE,
    HOSTILE_ESCAPED,
    assert_charts_drawn,
    error_line,
    invoke,
    needs_chromium,
    rendered_dom,
    screenshot,
)

QWEN2 = "Qwen/Qwen2-VL-2B-Instruct"


def test_components_add_up_to_device_used():
    spec = vlm_spec_for(resolve_model("qwen2-vl-7b"))
    est = estimate_vlm(spec, RunConfig(method="qlora", seq_len=1024, precision="fp16"), VlmRun(image_sizes=((448, 448),)), resolve_gpu("t4"))
    parts = parts_at_peak(est.breakdown)
    assert set(parts) == set(PARTS) and sum(parts.values()) == est.breakdown.device_used_bytes
    assert parts["vision"] == est.components()["vision"]["total_bytes"] and parts["llm"] == est.components()["llm"]["total_bytes"]


def test_the_sweep_keeps_the_aspect_ratio_and_the_asked_size():
    spec = vlm_spec_for(resolve_model("qwen2-vl-7b"))
    sizes = sweep_sizes(spec, VlmRun(image_sizes=((1280, 720),)))
    labels = [label for _, label in sizes]
    assert "1280x720" in labels and labels[0] == "224x126" and labels[-1] == "2688x1512"
    assert [scale for scale, _ in sizes] == sorted(scale for scale, _ in sizes)


@needs_chromium
def test_report_on_a_vlm_draws_component_bars_and_the_resolution_sweep(tmp_path):
    out = tmp_path / "vlm.html"
    result = invoke("report", "--model", "qwen2-vl-7b", "--gpu", "t4", "--gpu", "l4", "--out", out)
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    for heading in ("What was estimated", "Components per stage", "How the image size moves the peak"):
        assert f"<h2>{heading}</h2>" in page
    for text in ("stage 1 · LLM frozen (QLoRA base)", "stage 2 · LoRA r16", "vision tower", "projector", "NVIDIA Tesla T4", "NVIDIA L4",
                 "448x448 (asked)", "258"):
        assert text in page, text
    dom = rendered_dom(out, tmp_path)
    assert_charts_drawn(page, dom, expected=2)
    print(f"screenshot: {screenshot(out, tmp_path, 'report-qwen2-vl-7b-t4-l4.png')}")


def _vlm_folder(tmp_path, name: str):
    folder = tmp_path.joinpath(*name.split("/"))
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**VLM_CONFIGS[QWEN2]["config"], "_name_or_path": HOSTILE}))
    return folder


@needs_chromium
def test_a_hostile_vlm_path_is_escaped(tmp_path):
    folder = _vlm_folder(tmp_path, "<script>alert(1)</script>")  # the path spells <script>alert(1)</script>
    out = tmp_path / "hostile.html"
    result = invoke("report", "--model", folder, "--gpu", "t4", "--method", "qlora", "--image-size", "448x448", "--out", out)
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert HOSTILE not in page and HOSTILE_ESCAPED in page
    assert_charts_drawn(page, rendered_dom(out, tmp_path), expected=2)


def _stage_records(db, model_dir: str) -> list[int]:
    """Two stage records as `vramplan run --schedule two-stage` writes them (vlm_loop): real estimates, made-up measurements."""
    spec = vlm_spec_for(resolve_model("qwen2-vl-2b"))
    ids = []
    with Store.open(db) as store:
        for stage, loss0 in ((1, 6.2), (2, 4.8)):
            run = RunConfig(method="lora", batch=1, seq_len=512, device_kind="cpu", precision="bf16")
            vlm = VlmRun(stage=stage, image_sizes=((224, 224),))
            est = estimate_vlm(spec, run, vlm)
            b = est.breakdown
            measured = int(b.peak_allocated_bytes * (0.97 if stage == 1 else 1.02))  # fixture, not a measurement
            trainer = {"kind": "vramplan run", "grad_accum": 2, "lr": {"learning_rate": 1e-3 if stage == 1 else 2e-4, "projector_lr": None, "vision_lr_scale": 0.1},
                       "loss_curve": [[step, round(loss0 - 0.15 * step, 4)] for step in range(1, 9)]}
            components = {part: {"trainable_params": v["trainable_params"], "total_bytes": v["total_bytes"]} for part, v in est.components().items()}
            ids.append(store.add_run(RunRecord(
                source="cpu", outcome="ok", model_name=model_dir, model_config=VLM_CONFIGS[QWEN2]["config"],
                run_config={**asdict(run), "vlm": vlm.as_dict()}, device_name="synthetic fixture device", stack="synthetic fixture",
                environment={"fixture": True, "trainer": trainer},
                estimate={"terms": b.by_name(), "at_peak": b.at_peak(), "peak_phase": b.peak_phase, "components": components},
                est_peak_allocated_bytes=b.peak_allocated_bytes, est_peak_reserved_bytes=b.peak_reserved_bytes,
                est_device_used_bytes=b.device_used_bytes, peak_allocated_bytes=measured,
            )))
    return ids


def _two_stage_dir(tmp_path, db, model_dir="tiny-qwen2-vl"):
    out = tmp_path / "run"
    for stage, record_id in zip((1, 2), _stage_records(db, model_dir)):
        folder = out / f"stage-{stage}"
        folder.mkdir(parents=True)
        write_marker(folder, {"status": "finished", "step": 8, "total_steps": 8, "record_ids": [record_id], "vlm": {"stage": stage},
                              "model": model_dir})
    return out


@needs_chromium
def test_a_two_stage_run_shows_both_losses_and_measured_against_estimated(tmp_path):
    db = tmp_path / "fixture.db"
    run_dir = _two_stage_dir(tmp_path, db)
    out = tmp_path / "run.html"
    result = invoke("report", "--model", "qwen2-vl-2b", "--gpu", "t4", "--run", run_dir, "--db", db, "--out", out)
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert "<h2>Run (vision-language, by stage)</h2>" in page
    for text in ("stage 1 · peak allocated", "stage 2 · peak allocated", "stage 1: 6.0500 \\u2192 5.0000 over 8 steps", "stage 2 starts",
                 "+3.1 %", "-2.0 %", "synthetic fixture device"):
        assert text in page, text
    dom = rendered_dom(out, tmp_path)
    assert_charts_drawn(page, dom, expected=4)
    print(f"screenshot: {screenshot(out, tmp_path, 'report-vlm-run.png')}")


def test_a_run_without_its_store_says_where_the_curves_live(tmp_path):
    db = tmp_path / "fixture.db"
    run_dir = _two_stage_dir(tmp_path, db)
    out = tmp_path / "run.html"
    empty = tmp_path / "other.db"
    Store.open(empty).close()
    result = invoke("report", "--model", "qwen2-vl-2b", "--gpu", "t4", "--run", run_dir, "--db", empty, "--out", out)
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert "no store record found" in page and "pass the store the run was recorded in (--db)" in page


@pytest.mark.parametrize("args,message", [
    (("--model", "qwen2-vl-7b", "--images", "0"), "Error: --images must be 1 or more for a VLM report, got 0"),
    (("--model", "qwen2-vl-7b", "--image-size", "wide"), "Error: --image-size 'wide' is not WIDTHxHEIGHT in pixels"),
    (("--model", "8b", "--image-size", "448x448"), "Error: meta-llama/Llama-3.1-8B is a text-only model"),
    (("--model", "qwen2-vl-7b", "--seq-len", "100"), "Error: --seq-len 100 is the whole sequence the LLM sees"),
])
def test_report_errors_are_one_line(tmp_path, args, message):
    result = invoke("report", *args, "--gpu", "t4", "--out", tmp_path / "x.html")
    assert result.exit_code == 1
    assert error_line(result).startswith(message), result.output
    assert not (tmp_path / "x.html").exists()


def test_run_dir_without_a_vlm_stage_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("report", "--model", "qwen2-vl-2b", "--gpu", "t4", "--run", tmp_path / "empty", "--out", tmp_path / "x.html")
    assert result.exit_code == 1
    assert error_line(result).startswith(f"Error: --run {tmp_path / 'empty'}: no VLM stage run here")


@needs_chromium
def test_recommend_html_for_a_vlm(tmp_path):
    out = tmp_path / "plan.html"
    result = invoke("recommend", "--model", "qwen2-vl-7b", "--gpu", "t4", "--dataset-size", "5000", "--image-size", "448x448", "--html", out)
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    for text in ("<h2>The two-stage plan</h2>", "stage 1 · LLM frozen (QLoRA base)", "stage 2 · QLoRA r16", "5,000 examples (1K-10K)",
                 "fit limit 13.85 GiB (5% margin kept free)"):
        assert text in page, text
    assert_charts_drawn(page, rendered_dom(out, tmp_path), expected=1)
    print(f"screenshot: {screenshot(out, tmp_path, 'recommend-qwen2-vl-7b-t4.png')}")
