"""`run --data` / `recommend --dataset` in the formats people keep data in: JSON, CSV, Parquet and
a `datasets` save_to_disk folder give the same examples as the JSONL file, bad rows are located."""

import json

import pytest
from click.testing import CliRunner

from tests.test_trainer import make_rows, make_tokenizer, write_jsonl
from vramplan.calibrate.trainer.data import DataError, load_dataset
from vramplan.cli import cli
from vramplan.planner.dataset_stats import read_texts

pytest.importorskip("datasets")
ROWS = make_rows(30)
COLUMNS = ("text", "instruction", "input", "output", "messages")


def table(rows, messages_as_text=False):
    """Every row with every column (None where it has none), as tables hold them."""
    out = []
    for row in rows:
        full = {key: row.get(key) for key in COLUMNS}
        if messages_as_text and full["messages"] is not None:
            full["messages"] = json.dumps(full["messages"])
        out.append(full)
    return out


def write(tmp_path, fmt, rows=ROWS):
    import datasets
    import pandas as pd

    path = tmp_path / {"json": "rows.json", "csv": "rows.csv", "parquet": "rows.parquet", "disk": "rows_disk", "jsonl": "rows.jsonl"}[fmt]
    if fmt == "jsonl":
        return write_jsonl(path, rows)
    if fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "csv":
        pd.DataFrame(table(rows, messages_as_text=True)).to_csv(path, index=False)
    elif fmt == "parquet":
        pd.DataFrame(table(rows)).to_parquet(path)
    else:
        datasets.Dataset.from_list(table(rows)).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet", "disk"])
def test_each_format_gives_the_examples_of_the_jsonl_file(tmp_path, fmt):
    tokenizer = make_tokenizer()
    want = load_dataset(write(tmp_path, "jsonl"), tokenizer, 64)
    got = load_dataset(write(tmp_path, fmt), tokenizer, 64)
    assert [(e.input_ids, e.labels) for e in got.train] == [(e.input_ids, e.labels) for e in want.train]
    assert (got.rows, got.skipped, got.chat_template) == (want.rows, want.skipped, want.chat_template)
    assert read_texts(write(tmp_path, fmt)) == read_texts(write(tmp_path, "jsonl"))


def test_a_bad_row_is_located_and_can_be_skipped(tmp_path):
    rows = ROWS[:5] + [{"instruction": "count from 3", "output": ""}] + ROWS[5:10]
    tokenizer = make_tokenizer()
    csv, parquet = write(tmp_path, "csv", rows), write(tmp_path, "parquet", rows)
    with pytest.raises(DataError) as error:
        load_dataset(csv, tokenizer, 64)
    assert str(error.value) == f"{csv}:7: 'output' must be a non-empty string, got NoneType; fix the row or pass --skip-bad-rows"
    with pytest.raises(DataError) as error:
        load_dataset(parquet, tokenizer, 64)
    assert str(error.value).startswith(f"{parquet}:row 6: 'output' must be a non-empty string")
    skipped = load_dataset(parquet, tokenizer, 64, skip_bad_rows=True)
    assert skipped.skipped == 1 and skipped.skip_messages[0].startswith(f"{parquet}:row 6:")


def test_an_unreadable_table_is_one_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError) as error:
        load_dataset(path, make_tokenizer(), 64)
    assert str(error.value).startswith(f"--data {path}: the datasets library could not read it as parquet (")


@pytest.mark.slow
def test_run_trains_from_a_parquet_file_and_recommend_reads_a_folder(tmp_path):
    import torch
    from transformers import LlamaForCausalLM

    from tests.test_trainer import tiny_llama_config

    tokenizer = make_tokenizer()
    model = tmp_path / "model"
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(len(tokenizer))).save_pretrained(model)
    tokenizer.save_pretrained(model)
    data = write(tmp_path, "parquet")
    result = CliRunner().invoke(cli, ["run", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "out"),
                                      "--db", str(tmp_path / "store.db"), "--method", "lora", "--rank", "4", "--seq-len", "64",
                                      "--batch", "4", "--precision", "fp32", "--no-grad-ckpt", "--max-steps", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "trained steps 0 -> 2" in result.output
    folder = write(tmp_path, "disk")
    result = CliRunner().invoke(cli, ["recommend", "--model", str(model), "--gpu-mem", "8GiB", "--dataset", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dataset"].startswith(f"dataset {folder.name}: 30 examples")
