"""`vramplan calibrate`: a real measured run into a real SQLite file, the report, and bad input."""

import json

import pytest
from click.testing import CliRunner

from vramplan.cli import cli

from .test_cli import error_line


def run(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.slow
def test_measure_store_fit_and_report(tmp_path):
    db = tmp_path / "runs.db"
    result = run("calibrate", "--device", "cpu", "--models", "probe-qwen3", "--methods", "full", "--steps", "2", "--db", str(db))
    assert result.exit_code == 0, result.output
    assert "1 runs: 1 ok, 0 oom, 0 error" in result.output
    rows = json.loads(run("calibrate", "--report", "--db", str(db), "--json").output)
    assert len(rows) == 1
    row = rows[0]
    for key in ("method", "source", "estimated_bytes", "measured_bytes", "error_pct", "config"):
        assert key in row
    assert row["method"] == "full" and row["source"] == "cpu" and row["config"]["method"] == "full"
    assert row["measured_bytes"] > 0 and abs(row["error_pct"]) < 10
    table = run("calibrate", "--report", "--db", str(db))
    assert table.exit_code == 0 and "median" in table.output and "full" in table.output


def test_report_on_empty_store_says_what_to_do(tmp_path):
    result = run("calibrate", "--report", "--db", str(tmp_path / "new.db"))
    assert result.exit_code == 1
    assert error_line(result).startswith("Error: the store")
    assert "run `vramplan calibrate` first" in error_line(result)


def test_corrupt_store_is_one_line_and_untouched(tmp_path):
    db = tmp_path / "broken.db"
    db.write_bytes(b"garbage" * 500)
    result = run("calibrate", "--report", "--db", str(db))
    assert result.exit_code == 1
    assert error_line(result).startswith(f"Error: {db} is not a readable vramplan store")
    assert db.read_bytes() == b"garbage" * 500


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--trace"], "Error: --trace needs --model (e.g. --model 8b)"),
        (["--steps", "1"], "Error: --steps must be at least 2: the steady state starts at step 2"),
        (["--device", "cuda"], "Error: --device cuda: no CUDA device is visible to torch; use --device cpu"),
        (["--device", "cpu", "--models", "nope"], "Error: --models/--methods/--where left nothing to measure in this preset"),
        (["--device", "cpu", "--preset", "huge"], "Error: Invalid value for '--preset'"),
    ],
)
def test_bad_input(args, expected):
    result = run("calibrate", *args)
    assert result.exit_code != 0
    assert error_line(result).startswith(expected), result.output
