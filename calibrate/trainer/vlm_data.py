"""Image-text JSONL -> token ids, labels and image tensors, through the model's own processor.

Records come from `planner.vision.image_text_file` (three shapes, every bad line reported as
``file:line``). Each record is rendered to (text, trained) segments (the tokenizer's chat template
when it has one, else a plain layout; a caption is its image(s) then the caption), the image
marker replaced by the family's placeholder, and each segment run through the processor, which
expands the placeholder into the image's tokens. Labels are -100 on the prompt, the image tokens
and the padding: the loss is on the answers (captions) only.

Token ids are made once, at load; the pixels are made per batch by the processor's image
processor (the same call, so they match the ids), so a large dataset is not held as tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from vramplan.planner.vision import VLM_FAMILIES
from vramplan.planner.vision.image_text_file import IMAGE, ImageTextRecord, read_image_text_file

from .data import IGNORE, Batches, DataError, _chat_segments, _plain_chat, _RowError, split_eval

# what the processor expands into an image's tokens, per family (the marker in the records is IMAGE)
PLACEHOLDERS = {
    "llava": "<image>", "llava_next": "<image>",
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>", "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "qwen3_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "smolvlm": "<image>", "idefics3": "<image>",  # Idefics3Processor expands it into the tiles' tokens
    "paligemma": "<image>",  # PaliGemmaProcessor puts the image tokens first, then <bos> and the prompt
}
PLACEHOLDERS["mllama"] = "<|image|>"  # one token per image; the image enters through cross-attention
TOKEN_KEYS = ("mm_token_type_ids", "token_type_ids")  # processor outputs laid out per token, padded like the ids


@dataclass(frozen=True)
class VlmExample:
    input_ids: list[int]
    labels: list[int]
    images: tuple[Path, ...]
    extras: dict  # TOKEN_KEYS the processor returned, one value per token

    @property
    def target_tokens(self) -> int:
        return sum(1 for label in self.labels[1:] if label != IGNORE)


@dataclass
class VlmDataset:
    path: Path
    train: list[VlmExample]
    eval: list[VlmExample]
    rows: int
    records: list[ImageTextRecord] = field(default_factory=list)
    skipped: int = 0
    skip_messages: list[str] = field(default_factory=list)
    truncated: int = 0
    no_target: int = 0
    chat_template: bool = False


def _segments(record: ImageTextRecord, tokenizer) -> tuple[list[tuple[str, bool]], bool]:
    if record.format == "caption":
        return [(record.turns[0].text + "\n", False), (record.turns[1].text, True)], False
    messages = [{"role": t.role, "content": t.text} for t in record.turns]
    if getattr(tokenizer, "chat_template", None):
        return _chat_segments(tokenizer, messages), True
    return _plain_chat(messages), False


def _image_token_id(processor, placeholder: str) -> int:
    token = getattr(processor, "image_token", None) or placeholder
    return processor.tokenizer.convert_tokens_to_ids(token)


def open_image(path: Path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def encode(record: ImageTextRecord, processor, model_type: str) -> tuple[list[int], list[int], dict, bool]:
    """(input_ids, labels, token extras, rendered by a chat template) of one record."""
    tokenizer = processor.tokenizer
    placeholder = PLACEHOLDERS[model_type]
    image_id = _image_token_id(processor, placeholder)
    prefix_lm = VLM_FAMILIES[model_type].prefix_lm
    segments, templated = _segments(record, tokenizer)
    ids, labels, extras = [], [], {}
    if not templated and tokenizer.bos_token_id is not None:
        ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE)
    images = list(record.images)
    for text, trained in segments:
        count = text.count(IMAGE)
        text = text.replace(IMAGE, placeholder)
        if count:
            pictures = [open_image(p) for p in images[:count]]
            images = images[count:]
            out = processor(text=[text], images=pictures, add_special_tokens=False)
        else:
            out = tokenizer([text], add_special_tokens=False)
        part = list(out["input_ids"][0])
        for key in TOKEN_KEYS:
            if key in out:
                extras.setdefault(key, [0] * len(ids)).extend(list(out[key][0]))
        for key in extras:
            if len(extras[key]) < len(ids) + len(part):  # a text-only segment: no image tokens there
                extras[key].extend([0] * (len(ids) + len(part) - len(extras[key])))
        if trained and prefix_lm:  # PaliGemma: the target text is the suffix (token type 1), attended causally
            types = extras.setdefault("token_type_ids", [0] * (len(ids) + len(part)))
            types[len(ids):] = [1] * len(part)
        ids += part
        labels += [t if trained and t != image_id else IGNORE for t in part]
    eos = tokenizer.eos_token_id
    if not templated and eos is not None and ids[-1] != eos:
        ids.append(eos)
        labels.append(eos if segments[-1][1] else IGNORE)
        for key in extras:
            extras[key].append(1 if key == "token_type_ids" and prefix_lm and segments[-1][1] else 0)
    return ids, labels, extras, templated


def load_vlm_dataset(path, processor, model_type: str, seq_len: int, skip_bad_rows: bool = False, eval_fraction: float = 0.05,
                     seed: int = 0) -> VlmDataset:
    """Read, check, encode and split an image-text JSONL file.

    Raises:
        DataError: no such file, bad records (every one listed as file:line, nothing trained or
            written) unless ``skip_bad_rows``, or no usable record.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--data {path}: no such file; give a JSONL file of {{image, caption}}, LLaVA or chat records")
    try:
        records, problems, rows = read_image_text_file(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason}); the data must be a UTF-8 JSONL file") from None
    if problems and not skip_bad_rows:
        raise DataError("\n".join(problems) + f"\n{len(problems)} bad record(s) in {path}: fix them or pass --skip-bad-rows; nothing was trained or written")
    ds = VlmDataset(path=path, train=[], eval=[], rows=rows, records=records, skipped=len(problems), skip_messages=problems)
    image_id = _image_token_id(processor, PLACEHOLDERS[model_type])
    examples = []
    for record in records:
        try:
            ids, labels, extras, templated = encode(record, processor, model_type)
        except _RowError as exc:  # the chat template failed on this record
            message = f"{path}:{record.line}: {exc}"
            if not skip_bad_rows:
                raise DataError(f"{message}\n1 bad record(s) in {path}: fix it or pass --skip-bad-rows; nothing was trained or written") from None
            ds.skipped += 1
            ds.skip_messages.append(message)
            continue
        ds.chat_template |= templated
        if len(ids) > seq_len:
            if image_id in ids[seq_len:]:  # cutting into an image's tokens would break the model's input
                ds.no_target += 1
                continue
            ds.truncated += 1
            ids, labels, extras = ids[:seq_len], labels[:seq_len], {k: v[:seq_len] for k, v in extras.items()}
        example = VlmExample(ids, labels, record.images, extras)
        if example.target_tokens == 0:
            ds.no_target += 1
            continue
        examples.append(example)
    if rows == 0:
        raise DataError(f"{path} is empty: it needs at least one image-text JSON record per line")
    if not examples:
        raise DataError(f"{path}: no usable records out of {rows} ({ds.skipped} bad, {ds.no_target} with no trained token or images beyond --seq-len {seq_len})")
    ds.train, ds.eval = split_eval(examples, eval_fraction, seed)
    return ds


def collate(examples: list[VlmExample], processor, pad_id: int, width: int | None = None) -> dict[str, torch.Tensor]:
    """Right-padded ids and labels (padding masked), the token extras, and the batch's pixels."""
    width = max(width or 0, max(len(e.input_ids) for e in examples))
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    extras = {key: torch.zeros((len(examples), width), dtype=torch.long) for key in examples[0].extras}
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
        for key, values in e.extras.items():
            extras[key][row, :n] = torch.tensor(values)
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask, **extras}
    if type(processor).__name__ == "MllamaProcessor" and any(e.images for e in examples):
        batch.update(_mllama_pixels(examples, processor, ids))
        return batch
    pictures = [open_image(p) for e in examples for p in e.images]
    if pictures:
        pixels = processor.image_processor(images=pictures, return_tensors="pt")
        batch.update({key: value for key, value in pixels.items() if isinstance(value, torch.Tensor)})
    return batch


def _mllama_pixels(examples: list[VlmExample], processor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mllama: the images per example, tiled and padded to max_num_tiles, and the cross-attention
    mask (each token from an image's `<|image|>` on sees that image's tiles), as MllamaProcessor builds them."""
    from transformers.models.mllama.processing_mllama import convert_sparse_cross_attention_mask_to_dense, get_cross_attention_token_mask

    pixels = processor.image_processor(images=[[open_image(p) for p in e.images] for e in examples], return_tensors="pt")
    sparse = [get_cross_attention_token_mask(row.tolist(), processor.image_token_id) for row in ids]
    dense = convert_sparse_cross_attention_mask_to_dense(sparse, num_tiles=pixels["num_tiles"],
                                                         max_num_tiles=processor.image_processor.max_image_tiles, length=ids.shape[1])
    out = {key: value for key, value in pixels.items() if isinstance(value, torch.Tensor)}
    out["cross_attention_mask"] = torch.as_tensor(dense)
    return out


class VlmBatches(Batches):
    """`data.Batches` for image-text examples: the same seeded order per epoch and resumable
    position, each micro-batch collated through the model's processor."""

    def __init__(self, examples: list[VlmExample], batch: int, processor, pad_id: int, seed: int, position: int = 0):
        super().__init__(examples, batch, pad_id, seed, position)
        self.processor = processor

    def _collate(self, chosen: list, width: int | None) -> dict[str, torch.Tensor]:
        return collate(chosen, self.processor, self.pad_id, width)


def eval_batches(examples: list[VlmExample], batch: int, processor, pad_id: int):
    for start in range(0, len(examples), batch):
        yield collate(examples[start : start + batch], processor, pad_id)


def truncate(examples: list[VlmExample], seq_len: int, image_id: int) -> list[VlmExample]:
    """Cut to a shorter ``seq_len`` (an OOM fallback); examples whose images or targets no longer fit are dropped."""
    out = []
    for e in examples:
        if len(e.input_ids) > seq_len:
            if image_id in e.input_ids[seq_len:]:
                continue
            e = VlmExample(e.input_ids[:seq_len], e.labels[:seq_len], e.images, {k: v[:seq_len] for k, v in e.extras.items()})
        if e.target_tokens:
            out.append(e)
    return out
