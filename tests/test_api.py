"""The Python API (`from vramplan import estimate, recommend`): its documented examples run, and it
gives what the command line gives."""

import doctest
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import vramplan
import vramplan.api
from vramplan import estimate, recommend
from vramplan.cli import cli
from vramplan.planner.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def cli_json(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args] + ["--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_documented_examples_run(monkeypatch):
    monkeypatch.chdir(ROOT)  # an example reads tests/data/interop
    result = doctest.testmod(vramplan.api, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 9


def test_estimate_is_the_cli_estimate():
    result = estimate("8b", gpu="t4", method="dora", rank=32, targets="q,v", batch=2, seq_len=1024)
    (entry,) = cli_json("estimate", "--model", "8b", "--gpu", "t4", "--method", "dora", "--rank", "32", "--targets", "q,v",
                        "--batch", "2", "--seq-len", "1024")["estimates"]
    assert result.document == entry
    assert (result.peak_allocated_bytes, result.max_batch, result.fits) == (entry["peak_allocated_bytes"], entry["max_batch"], entry["fits"])


def test_estimate_from_a_tool_config_is_the_cli_estimate():
    path = ROOT / "tests" / "data" / "interop" / "llama-factory-qwen-qlora.yaml"
    result = estimate(from_config=path, gpu="l4")
    assert result.document == cli_json("estimate", "--from", path, "--gpu", "l4")["estimates"][0]
    assert result.method == "qdora" and result.imported["files"] == [f"{path} (llama-factory)"]


def test_a_suggestion_exports_and_plans_the_same_run(tmp_path):
    best = recommend("8b", gpu="t4", dataset_size=5000)[0]
    assert best.config == cli_json("recommend", "--model", "8b", "--gpu", "t4", "--dataset-size", "5000")["recommendations"][0]["config"]
    notes = best.export("axolotl", tmp_path / "axolotl.yml")
    assert any(note.startswith("launch: ") for note in notes)
    best.write_plan(tmp_path / "plan.yaml")
    from_export = cli_json("estimate", "--from", tmp_path / "axolotl.yml", "--gpu", "t4")["estimates"]
    from_plan = cli_json("estimate", "--plan", tmp_path / "plan.yaml")["estimates"]
    assert from_export == from_plan


def test_errors_name_what_is_wrong():
    with pytest.raises(ConfigError, match="unknown setting rnak; known: rank, alpha"):
        estimate("8b", rnak=8)
    with pytest.raises(ConfigError, match="recommend\\(\\) needs gpu="):
        recommend("8b")
    assert vramplan.estimate is estimate and "recommend" in vramplan.__all__
