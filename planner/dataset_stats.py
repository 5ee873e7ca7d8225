"""Token-length statistics of a JSONL dataset, to choose the sequence length from the data."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

CHARS_PER_TOKEN = 4.0  # rough for English BPE vocabularies; used only without a tokenizer
MIN_SEQ_LEN, SEQ_MULTIPLE = 128, 64


@dataclass(frozen=True)
class DatasetStats:
    lengths: tuple[int, ...]  # tokens per example, sorted
    counted_with: str  # "tokenizer from <dir>" or "estimate: characters / 4"

    @property
    def examples(self) -> int:
        return len(self.lengths)

    @property
    def p50_tokens(self) -> int:
        return _percentile(self.lengths, 0.5)

    @property
    def p99_tokens(self) -> int:
        return _percentile(self.lengths, 0.99)

    def padding_share(self, seq_len: int) -> float:
        """The share of a padded run's tokens that are padding, every row padded to `seq_len` (what --packing saves)."""
        real = sum(min(length, seq_len) for length in self.lengths)
        return 1.0 - real / (seq_len * len(self.lengths)) if self.lengths else 0.0

    def truncated(self, seq_len: int) -> int:
        """Examples longer than `seq_len`."""
        return sum(1 for length in self.lengths if length > seq_len)

    def seq_len(self) -> int:
        """p99 rounded up to a multiple of 64 (at least 128)."""
        return max(MIN_SEQ_LEN, SEQ_MULTIPLE * math.ceil(self.p99_tokens / SEQ_MULTIPLE))


def row_text(row: dict) -> str:
    if isinstance(row.get("text"), str):
        return row["text"]
    if "messages" in row and isinstance(row["messages"], list):
        return "\n".join(str(m.get("content", "")) for m in row["messages"] if isinstance(m, dict))
    parts = [row.get(key) for key in ("instruction", "input", "output")]
    if any(isinstance(part, str) for part in parts):
        return "\n".join(part for part in parts if isinstance(part, str))
    raise ValueError("no 'text', 'messages' or 'instruction'/'input'/'output' field")


def read_texts(path: Path) -> list[str]:
    """Texts of a JSONL file.

    Raises:
        ConfigError: missing file, a malformed line (file:line), or no rows.
    """
    from .interop.rows import data_format, is_dataset_dir, table_rows

    if not path.is_file() and not is_dataset_dir(path):
        raise ConfigError(f"--dataset {path} does not exist")
    texts = []
    if data_format(path) != "jsonl":  # JSON, CSV, Parquet, save_to_disk: through the datasets library
        for location, row in table_rows(path, "--dataset"):
            try:
                texts.append(row_text(row))
            except ValueError as exc:
                raise ConfigError(f"{location}: {exc}") from None
        if not texts:
            raise ConfigError(f"--dataset {path} has no rows")
        return texts
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
                texts.append(row_text(row))
            except ValueError as exc:
                raise ConfigError(f"{path}:{number}: {exc}") from None
    if not texts:
        raise ConfigError(f"--dataset {path} has no rows")
    return texts


def _percentile(sorted_values: tuple[int, ...], fraction: float) -> int:
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def dataset_stats(path: Path, tokenizer_dir: Path | None = None) -> DatasetStats:
    """Token lengths with the model's tokenizer when there is one locally, else a character estimate."""
    texts = read_texts(path)
    counted_with = f"estimate: characters / {CHARS_PER_TOKEN:g}"
    lengths = [math.ceil(len(text) / CHARS_PER_TOKEN) for text in texts]
    if tokenizer_dir is not None and any((tokenizer_dir / name).exists() for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), trust_remote_code=False)
        lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
        counted_with = f"tokenizer from {tokenizer_dir}"
    return DatasetStats(tuple(sorted(lengths)), counted_with)
