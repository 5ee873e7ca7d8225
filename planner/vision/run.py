"""The VLM-only knobs of one run: images per example, their sizes, the training stage and what
each component does. The decoder's knobs stay in `RunConfig` (`--seq-len` is the whole
sequence the LLM sees, image tokens included; `--method`/`--targets` are the LLM's)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

STAGES = (1, 2)
VISION_STRATEGIES = ("freeze", "lora", "full")
PROJECTOR_STRATEGIES = ("freeze", "train")
SCHEDULES = ("two-stage",)


@dataclass(frozen=True)
class VlmRun:
    """`--stage`, `--images`, `--image-size`, `--max-pixels`, `--vision`, `--projector`, `--quantize-vision`.

    Stage 1 (LLaVA's projector warm-up) trains the projector only, whatever `--method` says;
    stage 2 trains the projector and the LLM by `--method`. The vision tower is frozen in both
    unless `--vision` says otherwise.
    """

    stage: int = 2
    images: int = 1  # images per example
    image_sizes: tuple[tuple[int, int], ...] = ()  # (width, height), cycled over the images; () = the family's default
    max_pixels: int | None = None  # Qwen-VL processors' max_pixels; None = the checkpoint's
    vision: str = "freeze"
    projector: str = "train"
    quantize_vision: bool = False  # QLoRA: the frozen vision tower in NF4 too

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_sizes", tuple(tuple(size) for size in self.image_sizes))
        problems = []
        if self.stage not in STAGES:
            problems.append(f"--stage {self.stage!r} is not one of: 1, 2")
        if not isinstance(self.images, int) or self.images < 0:
            problems.append(f"--images must be a whole number >= 0, got {self.images!r}")
        if self.vision not in VISION_STRATEGIES:
            problems.append(f"--vision {self.vision!r} is not one of: {', '.join(VISION_STRATEGIES)}")
        if self.projector not in PROJECTOR_STRATEGIES:
            problems.append(f"--projector {self.projector!r} is not one of: {', '.join(PROJECTOR_STRATEGIES)}")
        if self.max_pixels is not None and self.max_pixels < 28 * 28:
            problems.append(f"--max-pixels must be at least 784 (one 28x28 token), got {self.max_pixels}")
        if self.quantize_vision and self.vision != "freeze":
            problems.append(f"--quantize-vision needs a frozen vision tower (--vision freeze), got --vision {self.vision}")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def trains_llm(self) -> bool:
        return self.stage == 2

    @property
    def trains_projector(self) -> bool:
        return self.projector == "train"

    def as_dict(self) -> dict:
        return {"stage": self.stage, "images": self.images, "image_sizes": [list(s) for s in self.image_sizes],
                "max_pixels": self.max_pixels, "vision": self.vision, "projector": self.projector,
                "quantize_vision": self.quantize_vision}

    @classmethod
    def from_dict(cls, values: dict) -> "VlmRun":
        return cls(**{**values, "image_sizes": tuple(tuple(s) for s in values.get("image_sizes", ()))})


def stage_preset(stage: int, vision: str | None = None, projector: str | None = None) -> dict:
    """The seeds' stages: 1 = projector only (LLM and vision frozen), 2 = projector + the LLM's method.
    `--vision`/`--projector` given win."""
    return {"stage": stage, "vision": vision or "freeze", "projector": projector or "train"}
