"""The method registry: one record per method, read everywhere, never asked for by name."""

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from vramplan.cli import cli
from vramplan.planner import methods
from vramplan.planner.catalog import resolve_model
from vramplan.planner.estimator import estimate
from vramplan.planner.methods import METHODS, method_record
from vramplan.planner.specs import RunConfig

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("planner", "calibrate", "reports", "vramplan")
# what "asking which method it is" looks like in code (filtering by a user's --methods list is fine)
METHOD_QUESTIONS = re.compile(r"""\bmethod\s*(==|!=)\s*["']|\bmethod\s+(not\s+)?in\s*[(\[{]\s*["']|is_dora|QUANTIZED_METHODS|DORA_METHODS""")


def _sources():
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "methods" not in path.parts:  # the records themselves may say what they are
                yield path


def test_no_code_outside_the_records_asks_which_method_it_is():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _sources()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if METHOD_QUESTIONS.search(line)
    ]
    assert not offenders, "\n".join(offenders)


def test_every_record_is_complete():
    for key, record in METHODS.items():
        assert record.key == key and record.title and record.summary and record.quality > 0 and record.lr > 0
        assert record.lr_reason.format(lr=record.lr, size_note="")
        if record.adapter is not None:
            assert record.adapter.torch_module.startswith("vramplan.calibrate.adapters.")
            assert not (record.trains_base and record.adapter)


def test_unknown_method_lists_the_registry():
    result = CliRunner().invoke(cli, ["estimate", "--model", "8b", "--method", "prefix-tuning"])
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1] == f"Error: --method 'prefix-tuning' is not one of: {', '.join(METHODS)}"
    with pytest.raises(ValueError, match="is not one of"):
        method_record("prefix-tuning")


def test_a_new_method_is_one_record(monkeypatch):
    """A record registered at run time is estimated, compared and titled with no other change."""
    lora_fp16_base = replace(METHODS["lora"], key="lora-test", title="LoRA-Test", quality=1.0)
    monkeypatch.setitem(methods.METHODS, "lora-test", lora_fp16_base)
    monkeypatch.setattr(methods, "METHOD_KEYS", tuple(methods.METHODS))
    spec = resolve_model("8b").spec
    assert estimate(spec, RunConfig(method="lora-test")).breakdown.by_name() == estimate(spec, RunConfig(method="lora")).breakdown.by_name()
    result = CliRunner().invoke(cli, ["estimate", "--model", "8b", "--gpu", "l4", "--method", "lora,lora-test", "--json"])
    assert result.exit_code == 0, result.output
    by_method = {e["method"]: e for e in json.loads(result.output)["estimates"]}
    assert by_method["lora-test"]["peak_allocated_bytes"] == by_method["lora"]["peak_allocated_bytes"]
    table = CliRunner().invoke(cli, ["estimate", "--model", "8b", "--gpu", "l4", "--method", "lora-test"], env={"COLUMNS": "120"})
    assert "LoRA-Test" in table.output
