"""VLM ground truth at full size: fake-tensor traces of LLaVA-1.5-7B and Qwen2-VL-7B/2B, shipped in the
trace store and held to the issue's bounds per family and stage; VLM rows found again by resume."""

import shutil
import statistics
from pathlib import Path

import pytest

from vramplan.calibrate.report import error_rows
from vramplan.calibrate.store import Store
from vramplan.calibrate.vlm_build import VLM_PROBE_MODELS
from vramplan.calibrate.vlm_runner import VLM_TRACE_MODELS, vlm_cpu_matrix, vlm_trace_matrix
from vramplan.planner.specs import RunConfig
from vramplan.planner.vision import vlm_spec_from_config
from vramplan.planner.vision.run import VlmRun
from vramplan.planner.vlm_estimate import estimate_vlm

DATA = Path(__file__).resolve().parents[1] / "calibrate" / "data"
MEDIAN_BOUND, WORST_BOUND = 2.0, 5.0  # issue 10: per family and stage


def _records(name: str, tmp_path: Path):
    copy = tmp_path / name
    shutil.copyfile(DATA / name, copy)
    with Store.open(copy) as store:
        return store.runs()


@pytest.mark.parametrize("model,vlm", [
    ("probe-qwen2-vl", VlmRun(stage=2, images=2, image_sizes=((448, 336),))),
    ("probe-llava", VlmRun(stage=1)),
])
def test_a_fake_tensor_trace_of_a_probe_vlm_runs_and_matches_the_estimate(model, vlm):
    from vramplan.calibrate.runner import tensor_peak_estimate
    from vramplan.calibrate.vlm_trace import trace_vlm_step

    config = VLM_PROBE_MODELS[model]
    run = RunConfig(method="qlora", batch=2, seq_len=1024, device_kind="cuda")
    result = trace_vlm_step(config, run, vlm)
    assert result["mode"] == "fake" and result["trainable_by_component"]["projector"] > 0
    estimated = tensor_peak_estimate(estimate_vlm(vlm_spec_from_config(config, model), run, vlm).breakdown)
    assert abs(estimated - result["steady_peak_bytes"]) / result["steady_peak_bytes"] < 0.02


def test_traced_vlm_rows_ship_and_hold_the_bounds_per_family_and_stage(tmp_path):
    records = [r for r in _records("trace-standard.db", tmp_path) if "vlm" in r.run_config]
    shapes = {(r.model_name, r.run_config["method"], r.run_config["vlm"]["stage"], r.run_config["grad_ckpt"],
               tuple(map(tuple, r.run_config["vlm"]["image_sizes"])), r.run_config["vlm"]["images"]) for r in records}
    for model, images in VLM_TRACE_MODELS.items():  # every model at two image settings, both stages, LoRA and QLoRA, ckpt on/off
        for vlm in images:
            for method in ("lora", "qlora"):
                for stage in (1, 2):
                    for ckpt in (True, False):
                        assert (model, method, stage, ckpt, vlm.image_sizes, vlm.images) in shapes
    groups: dict[str, list[float]] = {}
    for row in error_rows(records, current=True):
        assert row["outcome"] == "ok"
        groups.setdefault(row["method"], []).append(abs(row["error_pct"]))
    from vramplan.calibrate.vlm_runner import vlm_model

    families = {vlm_model(model)[0]["model_type"] for model in VLM_TRACE_MODELS}  # every traced family has its groups
    assert {g.split()[1] for g in groups} == families and {g.split()[-1] for g in groups} == {"1", "2"}
    for group, errors in groups.items():
        assert statistics.median(errors) <= MEDIAN_BOUND and max(errors) <= WORST_BOUND, (group, sorted(errors))


@pytest.mark.parametrize("name,source,matrix", [
    ("cpu-standard.db", "cpu", vlm_cpu_matrix("standard")),
    ("trace-standard.db", "trace", vlm_trace_matrix("standard")),
])
def test_resume_recognizes_the_stored_vlm_rows(name, source, matrix, tmp_path):
    from vramplan.calibrate.resume import measured_keys, planned_key
    from vramplan.calibrate.runner import model_for

    records = [r for r in _records(name, tmp_path) if "vlm" in r.run_config and r.source == source]
    done = measured_keys(records)
    environment = records[0].environment | {"device_name": records[0].device_name, "stack": records[0].stack}
    planned = [planned_key(source, environment, model, model_for(model)[0], case) for model, case in matrix]
    assert planned and all(key in done for key in planned)  # a re-run of this matrix measures nothing again


def test_calibrate_trace_on_a_vlm_traces_the_vlm():
    import json

    from click.testing import CliRunner

    from vramplan.cli import cli

    result = CliRunner().invoke(cli, ["calibrate", "--trace", "--model", "qwen2-vl-2b", "--method", "lora", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output[result.output.index("{"):])
    assert doc["stage"] == 2 and doc["image_tokens"] == 258 and doc["trainable_by_component"]["projector"] == 34_087_936
    assert any(name.startswith("vision/") for name in doc["components"]) and abs(doc["error_pct"]) < 2
