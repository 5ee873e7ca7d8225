"""The processor of a VLM model directory: the model's own, loaded locally.

transformers 5 refuses to build Qwen2-VL's processor without a video processor, and its video
processors need torchvision; `image_only_qwen2_vl` is the same processor with the video part left
out (images only, which is what the trainer feeds it).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

from vramplan.planner.errors import ConfigError

from .model_dir import load_tokenizer


# the Qwen-VL families and the processor class each one's image-only variant derives from
QWEN_PROCESSORS = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2VLProcessor", "qwen3_vl": "Qwen3VLProcessor"}


@functools.cache  # one class per base, made when first needed (transformers imports lazily)
def image_only_qwen2_vl(base: str = "Qwen2VLProcessor"):
    import transformers

    class ImageOnlyQwenVLProcessor(getattr(transformers, base)):
        """A Qwen-VL processor without its video processor (transformers needs torchvision for one)."""

        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    return ImageOnlyQwenVLProcessor


def load_processor(path: Path, config: dict):
    """The directory's processor (AutoProcessor); Qwen-VL falls back to its image processor + tokenizer.

    Raises:
        ConfigError: no processor or image processor files, or ones that do not load.
    """
    import transformers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return transformers.AutoProcessor.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:  # transformers raises many kinds; the Qwen-VL fallback below covers the common one
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            if config.get("model_type") not in QWEN_PROCESSORS:
                raise ConfigError(f"{path}: the processor does not load ({type(exc).__name__}: {first}); save it there with processor.save_pretrained") from None
        try:
            images = transformers.AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:
            raise ConfigError(f"{path}: no image processor loads ({type(exc).__name__}); save the model's processor there") from None
        return image_only_qwen2_vl(QWEN_PROCESSORS[config["model_type"]])(image_processor=images, tokenizer=load_tokenizer(path, config))


def processor_max_pixels(processor) -> int | None:
    """Qwen-VL image processors' pixel cap (`size.longest_edge` in transformers 5), for the estimate."""
    size = getattr(processor.image_processor, "size", None)
    value = size.get("longest_edge") if hasattr(size, "get") else getattr(size, "longest_edge", None)
    return int(value) if value else None


def apply_max_pixels(processor, max_pixels: int) -> None:
    """Cap a Qwen-VL image processor at ``max_pixels`` (a plan's --max-pixels), as the estimate assumes."""
    import dataclasses

    images = processor.image_processor
    images.size = dataclasses.replace(images.size, longest_edge=int(max_pixels))
