"""Image -> tokens, by each family's processor rules (transformers 5 image processors).

Pure arithmetic, no images: `--image-size WxH` is all the planner needs.
"""

from __future__ import annotations

import math

from ..errors import ConfigError


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize (`image_processing_qwen2_vl.smart_resize`): each side to a multiple of
    `factor` (patch x merge = 28), then rescaled by sqrt into [min_pixels, max_pixels]."""
    if max(height, width) / min(height, width) > 200:
        raise ConfigError(f"--image-size {width}x{height}: aspect ratio over 200, which the Qwen-VL processors refuse")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def select_best_resolution(width: int, height: int, pinpoints: list) -> tuple[int, int]:
    """LLaVA-NeXT's anyres choice (`image_processing_utils.select_best_resolution`): the grid
    resolution that keeps the most of the image's pixels, then wastes the least. Returns (h, w)."""
    best, best_eff, best_waste = None, -1, float("inf")
    for h, w in pinpoints:
        scale = min(w / width, h / height)
        down_w, down_h = int(width * scale), int(height * scale)
        effective = min(down_w * down_h, width * height)
        waste = w * h - effective
        if effective > best_eff or (effective == best_eff and waste < best_waste):
            best, best_eff, best_waste = (h, w), effective, waste
    return best


def parse_image_size(text: str) -> tuple[int, int]:
    """`--image-size WxH` -> (width, height).

    Raises:
        ConfigError: not two positive whole numbers joined by x.
    """
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) == 2 and all(p.strip().isdigit() and int(p) > 0 for p in parts):
        return int(parts[0]), int(parts[1])
    raise ConfigError(f"--image-size {text!r} is not WIDTHxHEIGHT in pixels, e.g. 448x448 or 1280x720")
