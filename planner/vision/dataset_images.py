"""What a real image-text dataset's images become: image tokens per example by the family's own
rules (`VlmFamily.image_tokens`), read from the image headers (no pixels decoded into tensors).

`estimate --dataset FILE` plans the example with the most image tokens (the worst case a padded
batch meets) and reports the distribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .image_text_file import ImageTextRecord, read_image_text_file
from .record import VlmSpec


@dataclass(frozen=True)
class DatasetImages:
    path: Path
    tokens: tuple[int, ...]  # LLM image tokens per example, file order
    worst: ImageTextRecord  # the example with the most image tokens

    def percentile(self, q: float) -> int:
        """Nearest-rank percentile of the image tokens per example."""
        ordered = sorted(self.tokens)
        return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def dataset_images(path, spec: VlmSpec, max_pixels: int | None) -> DatasetImages:
    """Image tokens of every example of an image-text JSONL file.

    Raises:
        ConfigError: no such file, bad records (each as file:line), or no record with an image.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--dataset {path}: no such file; give an image-text JSONL file (caption, LLaVA or chat records)")
    records, problems, _ = read_image_text_file(path)
    if problems:
        raise ConfigError("\n".join(problems) + f"\n{len(problems)} bad record(s) in {path}: fix them to measure the dataset's images")
    tokens = tuple(sum(spec.family.image_tokens(spec, w, h, max_pixels).llm for w, h in r.sizes) for r in records)
    if not any(tokens):
        raise ConfigError(f"--dataset {path}: no record has an image; nothing to measure")
    worst = max(range(len(records)), key=tokens.__getitem__)
    return DatasetImages(path, tokens, records[worst])
