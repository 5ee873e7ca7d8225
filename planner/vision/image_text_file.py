"""Image-text JSONL records, read and checked without torch: one JSON object per line, image paths
relative to the file.

Three shapes, the ones people already have:

* caption: ``{"image": "a.png", "caption": "..."}``
* LLaVA: ``{"image": "a.png", "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": ...}]}``
  (``"image"`` may be a list; one ``<image>`` per image)
* TRL / HF chat: ``{"images": ["a.png"], "messages": [{"role": "user", "content": [{"type": "image"},
  {"type": "text", "text": ...}]}, {"role": "assistant", ...}]}`` (one ``{"type": "image"}`` per image)

Every record becomes the same `ImageTextRecord`: its images and its turns, with `IMAGE` where an
image goes. Every bad line is reported (``file:line: what``), not only the first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

IMAGE = "<image>"  # where an image goes in a turn's text (LLaVA's own marker)
FORMATS = "caption {image, caption}, LLaVA {image, conversations} or chat {images, messages}"
LLAVA_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
CHAT_ROLES = ("system", "user", "assistant")


class RecordError(ValueError):
    """One line is unusable; the reader adds the file and line."""


@dataclass(frozen=True)
class Turn:
    role: str  # system, user or assistant (only assistant turns are trained)
    text: str  # with IMAGE where each image goes


@dataclass(frozen=True)
class ImageTextRecord:
    line: int
    format: str  # caption, llava or chat
    images: tuple[Path, ...]
    turns: tuple[Turn, ...]
    sizes: tuple[tuple[int, int], ...] = ()  # (width, height) per image, when the images were opened


def _string(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RecordError(f"{what} must be a non-empty string, got {type(value).__name__}")
    return value


def _image_list(value, key: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, str) and item.strip() for item in items):
        raise RecordError(f"'{key}' must be an image path or a list of image paths")
    return items


def _caption(row: dict) -> tuple[list[str], list[Turn]]:
    images = _image_list(row["image"], "image")
    caption = _string(row["caption"], "'caption'")
    if IMAGE in caption:
        raise RecordError(f"wrong placeholder count: a caption holds no {IMAGE} (the image goes before it), found {caption.count(IMAGE)}")
    return images, [Turn("user", IMAGE * len(images)), Turn("assistant", caption)]


def _llava(row: dict) -> tuple[list[str], list[Turn]]:
    images = _image_list(row["image"], "image") if "image" in row else []
    conversation = row["conversations"]
    if not isinstance(conversation, list) or not conversation:
        raise RecordError("'conversations' must be a non-empty list of {from, value} objects")
    turns = []
    for i, item in enumerate(conversation):
        if not isinstance(item, dict) or item.get("from") not in LLAVA_ROLES:
            raise RecordError(f"conversations[{i}] must be {{'from': one of {', '.join(LLAVA_ROLES)}, 'value': string}}")
        turns.append(Turn(LLAVA_ROLES[item["from"]], _string(item.get("value"), f"conversations[{i}].value")))
    return images, turns


def _chat_content(content, i: int) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise RecordError(f"messages[{i}].content must be a string or a list of {{type: image|text}} parts")
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image":
            parts.append(IMAGE)
        elif kind == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        else:
            raise RecordError(f"messages[{i}].content[{j}] must be {{'type': 'image'}} or {{'type': 'text', 'text': string}}")
    return "".join(parts)


def _chat(row: dict) -> tuple[list[str], list[Turn]]:
    images = _image_list(row["images"], "images") if row.get("images") not in (None, []) else []
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise RecordError("'messages' must be a non-empty list of {role, content} objects")
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES:
            raise RecordError(f"messages[{i}] must be {{'role': one of {', '.join(CHAT_ROLES)}, 'content': ...}}")
        turns.append(Turn(message["role"], _chat_content(message.get("content"), i)))
    return images, turns


SHAPES = (("caption", ("image", "caption"), _caption), ("llava", ("conversations",), _llava), ("chat", ("messages",), _chat))


def parse_record(row, line: int, base_dir: Path) -> ImageTextRecord:
    """One parsed JSON value -> the record (image paths resolved against ``base_dir``).

    Raises:
        RecordError: not an object, an unknown shape, bad fields, or a placeholder count that is not the image count.
    """
    if not isinstance(row, dict):
        raise RecordError(f"expected a JSON object ({FORMATS}), got {type(row).__name__}")
    for name, keys, read in SHAPES:
        if all(key in row for key in keys):
            images, turns = read(row)
            break
    else:
        raise RecordError(f"unknown format: expected {FORMATS}; found keys {', '.join(sorted(row)) or 'none'}")
    if not any(turn.role == "assistant" for turn in turns):
        raise RecordError("no assistant (gpt) turn: nothing to train on")
    placeholders = sum(turn.text.count(IMAGE) for turn in turns)
    if placeholders != len(images):
        where = "{'type': 'image'} parts" if name == "chat" else f"{IMAGE} placeholders"
        raise RecordError(f"wrong placeholder count: {placeholders} {where} for {len(images)} image(s)")
    paths = tuple(Path(image) if Path(image).is_absolute() else base_dir / image for image in images)
    return ImageTextRecord(line, name, paths, tuple(turns))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, its data checked (PIL `verify`).

    Raises:
        RecordError: missing, or not an image PIL can read.
    """
    if not path.is_file():
        raise RecordError(f"missing image {path}")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            size = image.size
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise RecordError(f"unreadable image {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else 'bad data'})") from None
    return size


def read_image_text_file(path, check_image: Callable[[Path], tuple[int, int]] | None = image_size) -> tuple[list[ImageTextRecord], list[str], int]:
    """Every record of a JSONL file, the ``file:line: problem`` of every bad one, and the lines read.

    ``check_image`` opens each image (None: paths are not checked, sizes unknown).
    """
    path = Path(path)
    records, problems, rows = [], [], 0
    with path.open(encoding="utf-8-sig") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            rows += 1
            try:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RecordError(f"malformed JSON ({exc.msg} at column {exc.colno})") from None
                record = parse_record(row, lineno, path.parent)
                if check_image is not None:
                    sizes = tuple(check_image(image) for image in record.images)
                    record = ImageTextRecord(record.line, record.format, record.images, record.turns, sizes)
                records.append(record)
            except RecordError as exc:
                problems.append(f"{path}:{lineno}: {exc}")
    return records, problems, rows
