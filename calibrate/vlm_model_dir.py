"""A local VLM model directory made offline: config.json, a word-level tokenizer, the family's
own processor (image processor + tokenizer), and random weights as safetensors.

What `vramplan run` trains on CPU in the tests and the README example: the tiny LLaVA,
Qwen2-VL and Qwen3-VL architectures of `vlm_build.VLM_PROBE_MODELS`, with their special-token ids moved to
where this tokenizer puts them. Memory does not depend on the weights' values.
"""

from __future__ import annotations

import json
from pathlib import Path

from vramplan.planner.errors import ConfigError

from .vlm_build import VLM_PROBE_MODELS

# the words of the synthetic captions (`caption_rows`); anything else is <unk>
COLORS = ("red", "green", "blue", "yellow", "white", "black", "purple", "orange")
WORDS = (*COLORS, "a", "an", "picture", "photo", "image", "of", "the", "color", "is", "what", "describe", "this", "it", "shows", "plain", "\n")
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>", "<image>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>")
RGB = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30), "white": (245, 245, 245),
       "black": (10, 10, 10), "purple": (140, 30, 160), "orange": (240, 140, 20)}
TINY_VLMS = {"llava": "probe-llava", "qwen2_vl": "probe-qwen2-vl", "qwen3_vl": "probe-qwen3-vl", "smolvlm": "probe-smolvlm"}
TINY_VLMS["mllama"] = "probe-mllama"
TINY_VLMS["paligemma"] = "probe-paligemma"
MLLAMA_IMAGE = "<|image|>"  # after every other token, so that they keep their ids
# the Idefics3/SmolVLM prompt's specials, after the words so that every other token keeps its id
TILE_SPECIALS = ("<fake_token_around_image>", "<global-img>", "<end_of_utterance>",
                 *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)))


def make_tokenizer():
    """A fast word-level tokenizer with the LLaVA and Qwen-VL special tokens (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(SPECIALS + WORDS + TILE_SPECIALS + (MLLAMA_IMAGE,))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="removed")
    tok.add_special_tokens(list(SPECIALS) + ["\n"] + list(TILE_SPECIALS) + [MLLAMA_IMAGE])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def tiny_config(model_type: str, tokenizer) -> dict:
    """The probe model's config with its special tokens at this tokenizer's ids."""
    if model_type not in TINY_VLMS:
        raise ConfigError(f"tiny VLM model_type {model_type!r}: one of {', '.join(TINY_VLMS)}")
    config = json.loads(json.dumps(VLM_PROBE_MODELS[TINY_VLMS[model_type]]))
    ids = tokenizer.convert_tokens_to_ids
    if model_type == "llava":
        config.update(image_token_index=ids("<image>"), pad_token_id=ids("<pad>"))
        config["text_config"].update(bos_token_id=ids("<s>"), eos_token_id=ids("</s>"), pad_token_id=ids("<pad>"))
    elif model_type == "mllama":
        config.update(image_token_index=ids(MLLAMA_IMAGE))
        config["text_config"].update(bos_token_id=ids("<s>"), eos_token_id=ids("</s>"), pad_token_id=ids("<pad>"))
    elif model_type == "paligemma":
        config.update(image_token_index=ids("<image>"), pad_token_id=ids("<pad>"))
        config["text_config"].update(bos_token_id=ids("<s>"), eos_token_id=ids("</s>"), pad_token_id=ids("<pad>"))
    elif model_type == "smolvlm":
        config.update(image_token_id=ids("<image>"), pad_token_id=ids("<pad>"))
        config["text_config"].update(bos_token_id=ids("<s>"), eos_token_id=ids("</s>"), pad_token_id=ids("<pad>"))
    else:
        config.update(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
                      vision_end_token_id=ids("<|vision_end|>"))
        # Qwen3-VL keeps the decoder's token ids in its nested text_config
        (config.get("text_config") or config).update(bos_token_id=ids("<s>"), eos_token_id=ids("</s>"), pad_token_id=ids("<pad>"))
    return config


def make_processor(model_type: str, config: dict, tokenizer):
    """The family's transformers processor, built from values (PIL image processors: no torchvision)."""
    import transformers

    if model_type == "llava":
        vision = config["vision_config"]
        size = vision["image_size"]
        images = transformers.CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        return transformers.LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=vision["patch_size"],
                                           vision_feature_select_strategy=config["vision_feature_select_strategy"],
                                           num_additional_image_tokens=1)  # the CLS token (llava-1.5-hf sets 1)
    if model_type == "mllama":  # tiles of image_size, every image padded to max_num_tiles
        vision = config["vision_config"]
        size = {"height": vision["image_size"], "width": vision["image_size"]}
        images = transformers.MllamaImageProcessorPil(size=size, max_image_tiles=vision["max_num_tiles"])
        return transformers.MllamaProcessor(image_processor=images, tokenizer=tokenizer)
    if model_type == "paligemma":  # every image squared to the tower's size, one token per patch
        vision = config["vision_config"]
        size = vision["image_size"]
        images = transformers.SiglipImageProcessorPil(size={"height": size, "width": size})
        images.image_seq_length = (size // vision["patch_size"]) ** 2
        return transformers.PaliGemmaProcessor(image_processor=images, tokenizer=tokenizer)
    if model_type == "smolvlm":  # SmolVLMProcessor also wants a video processor; Idefics3Processor writes the same prompt
        from vramplan.planner.vision.idefics3 import scale_factor

        vision = config["vision_config"]
        images = transformers.SmolVLMImageProcessorPil(size=vision["size"], max_image_size=vision["max_image_size"])
        per_tile = (vision["image_size"] // vision["patch_size"]) ** 2 // scale_factor(config) ** 2
        return transformers.Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=per_tile)
    from .trainer.vlm_processor import QWEN_PROCESSORS, image_only_qwen2_vl

    vision = config["vision_config"]
    sizes = {}
    if model_type == "qwen3_vl":  # the Qwen3-VL checkpoints' pixel bounds, which the estimate assumes
        from vramplan.planner.vision.qwen3_vl import HUB_MAX_PIXELS, HUB_MIN_PIXELS

        sizes = {"size": {"shortest_edge": HUB_MIN_PIXELS, "longest_edge": HUB_MAX_PIXELS}}
    images = transformers.Qwen2VLImageProcessorPil(patch_size=vision["patch_size"], merge_size=vision["spatial_merge_size"],
                                                    temporal_patch_size=vision["temporal_patch_size"], **sizes)
    return image_only_qwen2_vl(QWEN_PROCESSORS[model_type])(image_processor=images, tokenizer=tokenizer)


def write_tiny_vlm_dir(path, model_type: str, seed: int = 0) -> Path:
    """Write a trainable tiny VLM directory: config.json, tokenizer, processor, random weights.

    Raises:
        ConfigError: an unknown model_type.
    """
    import torch
    import transformers

    path = Path(path)
    tokenizer = make_tokenizer()
    config = tiny_config(model_type, tokenizer)
    hf_config = transformers.AutoConfig.for_model(**config)
    torch.manual_seed(seed)
    from vramplan.planner.vision import VLM_FAMILIES

    cls = getattr(transformers, VLM_FAMILIES[model_type].torch_class)
    model = cls._from_config(hf_config)
    model.save_pretrained(path)
    processor = make_processor(model_type, config, tokenizer)
    processor.image_processor.save_pretrained(path)  # what a Qwen-VL dir loads without a video processor
    if model_type in ("llava", "smolvlm", "mllama", "paligemma"):
        processor.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def caption_rows(count: int, image_dir: Path, size: tuple[int, int] = (112, 112), seed: int = 0) -> list[dict]:
    """`count` caption records over plain-colour PNGs written to `image_dir` (paths relative to its parent).

    The caption names the colour, so a projector that learns something lowers the loss.
    """
    import random

    import numpy as np
    from PIL import Image

    rng = random.Random(seed)
    image_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(count):
        color = COLORS[index % len(COLORS)]
        noise = np.random.default_rng(seed + index).integers(-12, 12, (size[1], size[0], 3))
        pixels = np.clip(np.array(RGB[color]) + noise, 0, 255).astype(np.uint8)
        name = f"{index:04d}-{color}.png"
        Image.fromarray(pixels, "RGB").save(image_dir / name)
        template = rng.choice(("a picture of {c}", "the color is {c}", "a plain {c} image", "it shows {c}"))
        rows.append({"image": f"{image_dir.name}/{name}", "caption": template.format(c=color)})
    return rows


def main(argv=None) -> None:
    """`python -m vramplan.calibrate.vlm_model_dir OUT --family llava --captions 64`: a model dir + captions.jsonl."""
    import argparse

    parser = argparse.ArgumentParser(description="Write a tiny random-init VLM directory and a synthetic caption file.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--family", choices=sorted(TINY_VLMS), default="llava")
    parser.add_argument("--captions", type=int, default=64, help="caption records to write into OUT/captions.jsonl")
    args = parser.parse_args(argv)
    write_tiny_vlm_dir(args.out / "model", args.family)
    rows = caption_rows(args.captions, args.out / "images")
    (args.out / "captions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    print(f"wrote {args.out / 'model'} and {args.out / 'captions.jsonl'} ({args.captions} records)")


if __name__ == "__main__":
    main()
