"""Training rows from the files people keep them in.

JSONL is read line by line by its callers (exact `file:line` errors, one bad line skippable).
JSON (an array of objects, or JSON lines in a .json file), CSV / TSV, Parquet and a `datasets`
`save_to_disk` folder go through the `datasets` library, imported only here and only then; each
row comes back as a plain dict with its location for error messages: `file:LINE` for CSV (the
header is line 1), `file:row N` for the others. Empty cells are dropped (a table has every
column in every row), and a `messages` cell holding JSON text (CSV) is parsed, so rows have
the same shapes as JSONL rows: `text`, `instruction`/`input`/`output`, or chat `messages`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError

TABLE_SUFFIXES = {".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}
FORMATS = "JSONL, JSON, CSV, Parquet, or a datasets save_to_disk folder"


def is_dataset_dir(path: Path) -> bool:
    """A folder `Dataset.save_to_disk` (or `DatasetDict.save_to_disk`) wrote."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in ("state.json", "dataset_dict.json", "dataset_info.json"))


def data_format(path: Path) -> str:
    """"jsonl", "json", "csv", "parquet" or "disk"; an unknown suffix is read as JSONL (as always)."""
    path = Path(path)
    if is_dataset_dir(path):
        return "disk"
    return TABLE_SUFFIXES.get(path.suffix.lower(), "jsonl")


def _load(path: Path, fmt: str, flag: str):
    try:
        import datasets
    except ImportError:  # pragma: no cover - a dependency; said clearly if someone removed it
        raise ConfigError(f"{flag} {path}: reading {fmt} needs the `datasets` package (pip install datasets), or give a JSONL file") from None
    datasets.disable_progress_bars()
    try:
        if fmt == "disk":
            loaded = datasets.load_from_disk(str(path), keep_in_memory=True)
            if isinstance(loaded, datasets.DatasetDict):
                split = "train" if "train" in loaded else next(iter(loaded))
                loaded = loaded[split]
            return loaded
        with tempfile.TemporaryDirectory(prefix="vramplan-datasets-") as cache:  # nothing left in ~/.cache
            kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
            return datasets.load_dataset(fmt, data_files=str(path), split="train", cache_dir=cache, keep_in_memory=True, **kwargs)
    except Exception as exc:  # datasets wraps parser errors in its own types; the cause says what is wrong
        cause = exc.__cause__ or exc
        reason = " ".join(f"{type(cause).__name__}: {cause}".split())[:300]
        raise ConfigError(f"{flag} {path}: the datasets library could not read it as {fmt} ({reason}); "
                          f"the data must be {FORMATS} with rows of 'text', 'instruction'/'output' or 'messages'") from None


def _clean(row: dict) -> dict:
    out = {key: value for key, value in row.items() if value is not None and not (isinstance(value, float) and value != value)}
    messages = out.get("messages")
    if isinstance(messages, str) and messages.lstrip().startswith("["):
        try:
            out["messages"] = json.loads(messages)
        except ValueError:
            pass  # left as text: the row check says what is wrong with it
    return out


def table_rows(path: Path, flag: str = "--data") -> Iterator[tuple[str, dict]]:
    """(location, row) for each row of a JSON / CSV / Parquet file or a save_to_disk folder.

    Raises:
        ConfigError: the datasets library cannot read it (names the file and why).
    """
    path = Path(path)
    fmt = data_format(path)
    table = _load(path, fmt, flag)
    for index, row in enumerate(table):
        location = f"{path}:{index + 2}" if fmt == "csv" else f"{path}:row {index + 1}"
        yield location, _clean(dict(row))


def dataset_entry(path: str) -> dict:
    """How `datasets.load_dataset` (TRL's `datasets:` mixture) reads this path."""
    local = Path(path).expanduser().resolve()
    fmt = data_format(local)
    if fmt == "disk":
        return {"path": "arrow", "data_files": str(local / "**" / "*.arrow"), "split": "train"}
    return {"path": "json" if fmt == "jsonl" else fmt, "data_files": str(local), "split": "train"}
