"""`run --data` beyond JSONL: JSON, CSV, Parquet and `save_to_disk` folders, row by row.

The rows come from `planner.interop.rows` (the `datasets` library); each goes through the same
shape check and tokenization as a JSONL line, and a bad row is the same `DataError` (or skipped
with --skip-bad-rows), located as `file:LINE` (CSV) or `file:row N`.
"""

from __future__ import annotations

from pathlib import Path

from vramplan.planner.errors import ConfigError
from vramplan.planner.interop.rows import table_rows

from .data import DataError, _RowError, row_segments, tokenize_segments


def read_table_rows(path: Path, tokenizer, skip_bad_rows: bool, ds):
    """Yield (ids, labels) per usable row of a table; malformed rows raise or are counted on `ds`.

    Raises:
        DataError: the file cannot be read, or a row is malformed (without skip_bad_rows).
    """
    try:
        rows = list(table_rows(path, "--data"))
    except ConfigError as exc:
        raise DataError(str(exc)) from None
    for location, row in rows:
        ds.rows += 1
        try:
            segments, templated = row_segments(row, tokenizer)
            ds.chat_template |= templated
            yield tokenize_segments(tokenizer, segments, templated)
        except _RowError as exc:
            message = f"{location}: {exc}"
            if not skip_bad_rows:
                raise DataError(f"{message}; fix the row or pass --skip-bad-rows") from None
            ds.skipped += 1
            ds.skip_messages.append(message)
