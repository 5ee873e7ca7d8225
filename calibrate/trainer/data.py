"""JSONL training data -> tokenized examples with the prompt masked from the loss.

One JSON object per line, in one of three shapes (checked in this order):

* ``{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}, ...]}``
  only assistant turns are trained;
* ``{"instruction": ..., "input": ... (optional), "output": ...}``  only the output is trained;
* ``{"text": ...}``  every token is trained.

With a chat template (``tokenizer.chat_template``) messages and instructions are rendered by it;
without one a plain "### Instruction / ### Response" layout is used. Labels are -100 where the
loss must not look (prompt, padding); sequences are cut at ``seq_len``.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vramplan.planner.errors import VramplanError

IGNORE = -100
ROLES = ("system", "user", "assistant", "tool")
SHAPES = "'messages' (chat), 'instruction' + 'output', or 'text'"


class DataError(VramplanError):
    """The data file cannot be used; the message names the file (and line) and what to do."""


class _RowError(ValueError):
    """A problem with one row; the loader adds file and line number."""


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def target_tokens(self) -> int:
        return sum(1 for label in self.labels[1:] if label != IGNORE)  # the model shifts labels by one


@dataclass
class Dataset:
    path: Path
    train: list[Example]
    eval: list[Example]
    rows: int  # non-blank lines read
    skipped: int = 0  # malformed rows skipped (skip_bad_rows)
    skip_messages: list[str] = field(default_factory=list)
    truncated: int = 0  # rows cut at seq_len
    no_target: int = 0  # rows dropped: nothing left to learn after truncation
    chat_template: bool = False

    @property
    def train_tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.train)


# ---------------------------------------------------------------- row -> text segments
def _text(row: dict, key: str, required: bool = True) -> str:
    value = row.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise _RowError(f"'{key}' must be a non-empty string, got {type(value).__name__}")
    return value


def _messages(row: dict) -> list[dict]:
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise _RowError("'messages' must be a non-empty list of {role, content} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise _RowError(f"messages[{i}] must be {{'role': one of {', '.join(ROLES)}, 'content': string}}")
    if not any(m["role"] == "assistant" for m in messages):
        raise _RowError("'messages' has no assistant turn: nothing to train on")
    return messages


def _render(tokenizer, messages, generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as exc:  # jinja errors, templates that reject a role order, ...
        raise _RowError(f"the tokenizer's chat template failed on this row ({type(exc).__name__}: {exc})") from None


def _chat_segments(tokenizer, messages: list[dict]) -> list[tuple[str, bool]]:
    """(text, trained) pieces of the rendered conversation: assistant turns are the trained ones.

    A turn's span is what rendering it adds after the generation prompt; templates that are not
    prefix-stable (they rewrite earlier turns) fall back to the turn's content found in the text.
    """
    full = _render(tokenizer, messages, False)
    segments, pos = [], 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render(tokenizer, messages[:i], True)) if i else 0
        upto = _render(tokenizer, messages[: i + 1], False)
        end = len(upto)
        if not (full.startswith(upto) and pos <= start <= end):
            start = full.find(message["content"], pos)
            if start < 0:
                raise _RowError("the chat template does not reproduce the assistant's content")
            end = start + len(message["content"])
        segments += [(full[pos:start], False), (full[start:end], True)]
        pos = end
    segments.append((full[pos:], False))
    return [s for s in segments if s[0]]


def _plain_chat(messages: list[dict]) -> list[tuple[str, bool]]:
    segments = []
    for m in messages:
        segments.append((f"### {m['role'].capitalize()}:\n", False))
        segments.append((m["content"] + "\n\n", m["role"] == "assistant"))
    return segments


def row_segments(row, tokenizer) -> tuple[list[tuple[str, bool]], bool]:
    """(segments, rendered_by_template) for one parsed JSON row."""
    if not isinstance(row, dict):
        raise _RowError(f"expected a JSON object with {SHAPES}, got {type(row).__name__}")
    template = bool(getattr(tokenizer, "chat_template", None))
    if "messages" in row:
        messages = _messages(row)
        return (_chat_segments(tokenizer, messages), True) if template else (_plain_chat(messages), False)
    if "instruction" in row or "output" in row:
        instruction, output = _text(row, "instruction"), _text(row, "output")
        extra = _text(row, "input", required=False)
        if template:
            prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
            return _chat_segments(tokenizer, [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]), True
        prompt = f"### Instruction:\n{instruction}\n\n" + (f"### Input:\n{extra}\n\n" if extra.strip() else "")
        return [(prompt + "### Response:\n", False), (output, True)], False
    if "text" in row:
        return [(_text(row, "text"), True)], False
    raise _RowError(f"expected {SHAPES}; found keys {', '.join(sorted(row)) or 'none'}")


# ---------------------------------------------------------------- segments -> tokens
def _overlaps(start: int, end: int, spans) -> bool:
    return end > start and any(start < e and end > s for s, e in spans)


def tokenize_segments(tokenizer, segments, templated: bool) -> tuple[list[int], list[int]]:
    """Token ids and labels. A rendered template already holds its special tokens; raw text gets
    the tokenizer's own (BOS) and an EOS, trained when the last piece is, so the model learns to stop."""
    text = "".join(s for s, _ in segments)
    spans, pos = [], 0
    for piece, trained in segments:
        if trained:
            spans.append((pos, pos + len(piece)))
        pos += len(piece)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=not templated, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        labels = [t if _overlaps(s, e, spans) else IGNORE for t, (s, e) in zip(ids, enc["offset_mapping"])]
    else:  # slow tokenizers have no offsets: tokenize piece by piece
        ids, labels = [], []
        for i, (piece, trained) in enumerate(segments):
            part = tokenizer(piece, add_special_tokens=not templated and i == 0)["input_ids"]
            ids += part
            labels += part if trained else [IGNORE] * len(part)
    eos = tokenizer.eos_token_id
    if not templated and eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
        labels.append(eos if segments and segments[-1][1] else IGNORE)
    return ids, labels


# ---------------------------------------------------------------- the file
def _parse_line(line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise _RowError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None


def _read_rows(path: Path, tokenizer, skip_bad_rows: bool, ds: Dataset):
    """Yield (ids, labels) per usable row; malformed rows raise or are counted."""
    from vramplan.planner.interop.rows import data_format

    if data_format(path) != "jsonl":  # JSON, CSV, Parquet, save_to_disk: through the datasets library
        from .datasets_io import read_table_rows

        yield from read_table_rows(path, tokenizer, skip_bad_rows, ds)
        return
    with path.open(encoding="utf-8-sig") as handle:  # tolerates a byte-order mark
        lineno = 0
        try:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                ds.rows += 1
                try:
                    segments, templated = row_segments(_parse_line(line), tokenizer)
                    ds.chat_template |= templated
                    yield tokenize_segments(tokenizer, segments, templated)
                except _RowError as exc:
                    message = f"{path}:{lineno}: {exc}"
                    if not skip_bad_rows:
                        raise DataError(f"{message}; fix the line or pass --skip-bad-rows") from None
                    ds.skipped += 1
                    ds.skip_messages.append(message)
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}:{lineno + 1}: not UTF-8 text ({exc.reason}); the data must be a UTF-8 JSONL file") from None


def split_eval(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A held-out slice: `fraction` of the rows, at least one when there are 10 or more."""
    if len(examples) < 10 or fraction <= 0:
        return examples, []
    count = max(1, round(len(examples) * fraction))
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return [e for i, e in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)]


def load_dataset(path, tokenizer, seq_len: int, skip_bad_rows: bool = False, eval_fraction: float = 0.05, seed: int = 0) -> Dataset:
    """Read, tokenize, truncate and split a JSONL file.

    Raises:
        DataError: missing or empty file, a malformed row (file:line) unless ``skip_bad_rows``,
            or no row left with anything to learn.
    """
    path = Path(path)
    from vramplan.planner.interop.rows import FORMATS, is_dataset_dir

    if not path.is_file() and not is_dataset_dir(path):
        raise DataError(f"--data {path}: no such file; give {FORMATS} with one example per row")
    ds = Dataset(path=path, train=[], eval=[], rows=0)
    examples = []
    for ids, labels in _read_rows(path, tokenizer, skip_bad_rows, ds):
        if len(ids) > seq_len:
            ds.truncated += 1
            ids, labels = ids[:seq_len], labels[:seq_len]
        example = Example(ids, labels)
        if example.target_tokens == 0:
            ds.no_target += 1  # the prompt filled the whole window: a batch of these has no loss
            continue
        examples.append(example)
    if ds.rows == 0:
        raise DataError(f"{path} is empty: it needs at least one JSON row with {SHAPES}")
    if not examples:
        why = [f"{ds.skipped} malformed (skipped)"] if ds.skipped else []
        why += [f"{ds.no_target} with no trained token within --seq-len {seq_len}"] if ds.no_target else []
        raise DataError(f"{path}: no usable rows out of {ds.rows} ({'; '.join(why)})")
    ds.train, ds.eval = split_eval(examples, eval_fraction, seed)
    return ds


# ---------------------------------------------------------------- batches
def collate(examples: list[Example], pad_id: int, width: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad to ``width`` (default: the longest example); padding is masked from the loss.

    ``attention_mask`` marks the real tokens (for counting them): with right padding and causal
    attention no real token ever attends to a pad, so the model needs no mask.
    """
    width = max(width or 0, max(len(e.input_ids) for e in examples))
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class Batches:
    """Endless micro-batches over epochs, each epoch in its own seeded order.

    The position is a count of examples consumed, so a resumed run picks up exactly where the
    checkpoint left off, even with another micro-batch size.
    """

    def __init__(self, examples: list[Example], batch: int, pad_id: int, seed: int, position: int = 0):
        self.examples, self.batch, self.pad_id, self.seed = examples, batch, pad_id, seed
        self.position = position
        self._epoch, self._order = -1, []

    def _order_for(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            self._order = list(range(len(self.examples)))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(self._order)
            self._epoch = epoch
        return self._order

    def next(self, width: int | None = None) -> dict[str, torch.Tensor]:
        n = len(self.examples)
        chosen = []
        for _ in range(self.batch):
            epoch, offset = divmod(self.position, n)
            chosen.append(self.examples[self._order_for(epoch)[offset]])
            self.position += 1
        return self._collate(chosen, width)

    def _collate(self, chosen: list, width: int | None) -> dict[str, torch.Tensor]:
        return collate(chosen, self.pad_id, width)

    def epoch(self) -> float:
        return self.position / len(self.examples)


def eval_batches(examples: list[Example], batch: int, pad_id: int):
    for start in range(0, len(examples), batch):
        yield collate(examples[start : start + batch], pad_id)


def steps_per_epoch(n_examples: int, batch: int, grad_accum: int) -> int:
    return max(1, math.ceil(n_examples / (batch * grad_accum)))


def truncate_examples(examples: list[Example], seq_len: int) -> list[Example]:
    """Cut examples to a shorter ``seq_len`` (an OOM fallback); those left with no target are dropped."""
    out = []
    for e in examples:
        if len(e.input_ids) > seq_len:
            e = Example(e.input_ids[:seq_len], e.labels[:seq_len])
        if e.target_tokens:
            out.append(e)
    return out
