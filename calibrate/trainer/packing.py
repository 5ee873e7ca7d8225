"""`--packing`: whole examples packed into rows of `--seq-len` tokens, no padding between them.

Each example keeps its own positions (position_ids restart at 0), and transformers 5 reads
the restarts: `masking_utils.find_packed_sequence_indices` turns them into a block-diagonal
causal mask for SDPA (eager is refused before the run), so no example attends to another. The
first token of each example after the first in a row gets no label: it would be predicted
from the previous example's last token.
"""

from __future__ import annotations

import torch

from .data import IGNORE, Batches, Example


def packed_collate(rows: list[list[Example]], pad_id: int, width: int) -> dict[str, torch.Tensor]:
    """Rows of examples -> input_ids, labels, position_ids; `attention_mask` marks real tokens (for counting)."""
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for e in row:
            n = len(e.input_ids)
            ids[r, start : start + n] = torch.tensor(e.input_ids)
            labels[r, start : start + n] = torch.tensor(e.labels)
            if start:
                labels[r, start] = IGNORE  # never predicted across the boundary
            # the last example's positions run on over the padding: the pads join its block, after its tokens
            positions[r, start:] = torch.arange(width - start)
            mask[r, start : start + n] = 1
            start += n
    return {"input_ids": ids, "labels": labels, "position_ids": positions, "attention_mask": mask}


class PackedBatches(Batches):
    """`Batches` whose micro-batch is `batch` rows, each filled with whole examples up to `seq_len`."""

    def __init__(self, examples: list[Example], batch: int, pad_id: int, seed: int, seq_len: int, position: int = 0):
        super().__init__(examples, batch, pad_id, seed, position)
        self.seq_len = seq_len

    def _peek(self) -> Example:
        epoch, offset = divmod(self.position, len(self.examples))
        return self.examples[self._order_for(epoch)[offset]]

    def next(self, width: int | None = None) -> dict[str, torch.Tensor]:
        rows = []
        for _ in range(self.batch):
            row, used = [], 0
            while not row or used + len(self._peek().input_ids) <= self.seq_len:
                example = self._peek()
                row.append(example)
                used += len(example.input_ids)
                self.position += 1
            rows.append(row)
        return packed_collate(rows, self.pad_id, self.seq_len)


def probe_position_ids(batch: int, seq_len: int, examples_per_row: int) -> torch.Tensor:
    """Synthetic packed positions for the memory probe: each row holds `examples_per_row` equal examples."""
    length = -(-seq_len // examples_per_row)
    row = torch.arange(seq_len) % length
    return row.expand(batch, seq_len).clone()
