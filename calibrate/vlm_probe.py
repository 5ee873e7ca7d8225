"""Ground truth for VLMs: a few training steps of a tiny (CPU) or full-size (fake-tensor) VLM on
synthetic images, peak live tensor bytes per phase, as `cpu_probe` / `fake_trace` do for text.

Images are made with PIL (random pixels at the asked size), resized by the family's rule, and
laid out as the transformers 5 processors hand them to the model: Qwen2-VL flattened patches
`(patches, 3*2*14*14)` with `image_grid_thw` and `mm_token_type_ids`; LLaVA square
`(images, 3, 336, 336)` tensors. input_ids carry one placeholder per LLM image token, so
`--seq-len` is the whole sequence; labels mask the image tokens (-100), as the cookbooks do.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from vramplan.planner.specs import RunConfig
from vramplan.planner.vision import vlm_spec_from_config
from vramplan.planner.vision.run import VlmRun
from vramplan.planner.vlm_estimate import image_plan

from .cpu_probe import describe_model, make_optimizer, run_steps, summarize
from .cpu_tracker import LiveTensorTracker, unique_storage_bytes
from .vlm_build import build_vlm

MEAN, STD = 0.48, 0.27  # CLIP-ish normalisation; values do not matter to memory


def _pil_pixels(width: int, height: int, resized: tuple[int, int], seed: int) -> np.ndarray:
    """A random RGB image of the asked size, resized by the processor's rule, as (3, H, W) float32."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "RGB")
    image = image.resize(resized, Image.BICUBIC)
    return ((np.asarray(image, dtype=np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


def _qwen_patches(pixels: np.ndarray, patch: int, merge: int, temporal: int) -> np.ndarray:
    """`Qwen2VLImageProcessor`'s layout: a still image repeated to the temporal patch, cut in
    merge-ordered 14x14 patches, each flattened to 3*temporal*14*14."""
    channels, h, w = pixels.shape
    frames = np.repeat(pixels[None], temporal, axis=0)  # (T, C, H, W)
    gh, gw = h // patch, w // patch
    x = frames.reshape(1, temporal, channels, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gh * gw, channels * temporal * patch * patch)


def vlm_inputs(spec, run: RunConfig, vlm: VlmRun, fake: bool = False, seed: int = 0) -> dict:
    """The model's keyword arguments for one batch (tensors; fake ones allocate nothing)."""
    plan = image_plan(spec, run, vlm)
    config = spec.config
    qwen = spec.model_type in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
    image_id = config.get("image_token_id", config.get("image_token_index"))
    vocab = spec.decoder.vocab_size
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, min(vocab, image_id) - 8, (run.batch, run.seq_len), generator=gen)
    token_types = torch.zeros_like(ids, dtype=torch.int32)
    tiled = spec.model_type in ("idefics3", "smolvlm")
    if tiled:
        from vramplan.planner.vision.idefics3 import scale_factor

        per_tile = (spec.vision.image_size // spec.vision.patch_size) ** 2 // scale_factor(config) ** 2
    pixels, grids = [], []
    for row in range(run.batch):
        pos = 1
        for index, ((width, height), tokens) in enumerate(zip(plan.sizes, plan.per_image)):
            if qwen:
                ids[row, pos] = config["vision_start_token_id"]
                n = tokens.llm - 2
                ids[row, pos + 1:pos + 1 + n] = image_id
                token_types[row, pos + 1:pos + 1 + n] = 1
                ids[row, pos + 1 + n] = config["vision_end_token_id"]
                w, h = tokens.resized
                grids.append([1, h // spec.vision.patch_size, w // spec.vision.patch_size])
            elif tiled:  # Idefics3/SmolVLM: the processor's specials around each tile's placeholders
                n = tokens.tiles * per_tile
                ids[row, pos + 2:pos + 2 + n] = image_id
            else:
                n = tokens.llm
                ids[row, pos:pos + n] = image_id
            pos += tokens.llm
            if not fake and not tiled:
                pixels.append(_pil_pixels(width, height, tokens.resized, seed + 97 * row + index))
    labels = ids.clone()
    labels[ids == image_id] = -100
    vision = config.get("vision_config", {})
    if qwen:
        patch, merge, temporal = spec.vision.patch_size, vision.get("spatial_merge_size", 2), vision.get("temporal_patch_size", 2)
        total = sum(t.vit for t in plan.per_image) * run.batch
        if fake:
            pixel_values = torch.empty(total, 3 * temporal * patch * patch)
        else:
            # a copy through the dispatcher, so the tracker counts it (on a GPU: the copy to the device)
            pixel_values = torch.from_numpy(np.concatenate([_qwen_patches(p, patch, merge, temporal) for p in pixels])).clone()
        return {"input_ids": ids, "labels": labels, "pixel_values": pixel_values,
                "image_grid_thw": torch.tensor(grids, dtype=torch.long), "mm_token_type_ids": token_types}
    if spec.family.cross_attention_layers is not None:
        return _mllama_inputs(spec, run, plan, ids, labels, pixels, fake)
    size = spec.vision.image_size
    if tiled:  # (batch, tiles per example, 3, tile, tile): the vision batch is tiles; no pixel_attention_mask (all ones)
        shape = (run.batch, plan.tiles, 3, size, size)
        pixel_values = torch.empty(shape) if fake else torch.randn(shape, generator=gen)
        return {"input_ids": ids, "labels": labels, "pixel_values": pixel_values}
    extra = {}
    if spec.family.prefix_lm:  # PaliGemma trains with token_type_ids: image + prefix (0), suffix (1)
        prefix = 1 + plan.llm_tokens + 8
        token_types[:, prefix:] = 1
        labels[:, :prefix] = -100
        extra = {"token_type_ids": token_types.long()}
    count = run.batch * len(plan.per_image)
    pixel_values = torch.empty(count, 3, size, size) if fake else torch.from_numpy(np.stack(pixels)).clone()
    return {"input_ids": ids, "labels": labels, "pixel_values": pixel_values, **extra}


def _mllama_inputs(spec, run: RunConfig, plan, ids, labels, pixels, fake: bool) -> dict:
    """`MllamaProcessor`'s layout: each image's canvas cut into tiles and padded to max_num_tiles
    `(batch, images, tiles, 3, S, S)`, its aspect-ratio id and tile mask, and the cross-attention
    mask (each text token from an image's `<|image|>` on sees that image's real tiles)."""
    from vramplan.planner.vision.mllama import _vision

    v = _vision(spec.config)
    size, max_tiles = v["image_size"], v["max_num_tiles"]
    ratios = [tuple(r) for r in v["supported_aspect_ratios"]]
    images = len(plan.per_image)
    image_id = spec.config["image_token_index"]
    shape = (run.batch, images, max_tiles, 3, size, size)
    pixel_values = torch.empty(shape) if fake else torch.zeros(shape)
    ratio_ids = torch.zeros(run.batch, images, dtype=torch.long)
    ratio_mask = torch.zeros(run.batch, images, max_tiles, dtype=torch.long)
    cross = torch.zeros(run.batch, run.seq_len, images, max_tiles, dtype=torch.long)
    for row in range(run.batch):
        starts = (ids[row] == image_id).nonzero().flatten().tolist()
        for index, tokens in enumerate(plan.per_image):
            width, height = tokens.resized
            across, down = width // size, height // size
            # the processor's ratio is (tiles down, tiles across), its id that pair's place in the list + 1
            ratio_ids[row, index] = ratios.index((down, across)) + 1 if (down, across) in ratios else 1
            ratio_mask[row, index, :across * down] = 1
            cross[row, starts[index]:, index, :across * down] = 1
            if not fake:
                tiles = torch.from_numpy(pixels[row * images + index]).reshape(3, down, size, across, size).permute(1, 3, 0, 2, 4)
                pixel_values[row, index, :across * down] = tiles.reshape(-1, 3, size, size)
    return {"input_ids": ids, "labels": labels, "pixel_values": pixel_values, "aspect_ratio_ids": ratio_ids,
            "aspect_ratio_mask": ratio_mask, "cross_attention_mask": cross}


def run_vlm_steps(tracker: LiveTensorTracker, model, optimizer, run: RunConfig, inputs: dict, steps: int, record_loss: bool = True) -> dict:
    """HF-Trainer-style steps: `cpu_probe.run_steps` with the image inputs beside the tokens."""
    rest = {key: value for key, value in inputs.items() if key not in ("input_ids", "labels")}
    return run_steps(tracker, model, optimizer, run, inputs["input_ids"], inputs["labels"], steps, record_loss, inputs=rest)


def measure_vlm_cpu(hf_config: dict, run: RunConfig, vlm: VlmRun, steps: int = 3, seed: int = 0) -> dict:
    """`cpu_probe.measure_cpu` for a VLM: the same keys, plus `trainable_by_component`."""
    from .vlm_build import trainable_by_component

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    spec = vlm_spec_from_config(hf_config, hf_config.get("model_type", "vlm"))
    tracker = LiveTensorTracker(fp32_matmul=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tracker:
            with tracker.phase("load", step=-1):
                model = build_vlm(hf_config, run, vlm, device="cpu")
            extra = describe_model(tracker, model)
            extra["trainable_by_component"] = trainable_by_component(model, spec.model_type)
            optimizer = make_optimizer(run, [p for p in model.parameters() if p.requires_grad])
            with tracker.phase("inputs", step=-1):
                inputs = vlm_inputs(spec, run, vlm, seed=seed)
            extra["input_bytes"] = unique_storage_bytes(list(inputs.values()))
            extra.update(run_vlm_steps(tracker, model, optimizer, run, inputs, steps))
    extra.update(seconds=time.perf_counter() - t0, mode="cpu", round_to=1, notes=list(model.vramplan_notes), run=run, steps=steps, seed=seed)
    return summarize(tracker, steps, extra)
