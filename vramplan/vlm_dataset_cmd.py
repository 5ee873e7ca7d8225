"""`vramplan estimate --dataset FILE` for a VLM: plan the dataset's largest example's images."""

from __future__ import annotations

import click

from .planner.errors import ConfigError


def dataset_option(func):
    return click.option("--dataset", "dataset", type=click.Path(dir_okay=False), default=None,
                        help="VLM: an image-text JSONL file; its images set --images/--image-size (the example with the most image tokens) and the spread is reported.")(func)


def apply_dataset(dataset, resolved, vlm_values: dict) -> dict:
    """`vlm_values` with the images of the dataset's largest example; prints what was measured (stderr).

    Raises:
        ConfigError: --image-size/--images given too, a text model, or bad records.
    """
    from .planner.vision import is_vlm_config, vlm_spec_for
    from .planner.vision.dataset_images import dataset_images

    if not is_vlm_config(resolved.config):
        raise ConfigError("--dataset on estimate measures a VLM's images; for a text model use `vramplan recommend --dataset`")
    if vlm_values.get("image_size") or vlm_values.get("images") is not None:
        raise ConfigError("give either --dataset or --image-size/--images: the dataset sets both")
    found = dataset_images(dataset, vlm_spec_for(resolved), vlm_values.get("max_pixels"))
    sizes = found.worst.sizes
    click.echo(f"note: --dataset {dataset}: {len(found.tokens)} examples, image tokens per example median {found.percentile(50):,}, "
               f"p99 {found.percentile(99):,}, max {max(found.tokens):,}; planned with the largest (line {found.worst.line}: "
               f"{', '.join(f'{w}x{h}' for w, h in sizes)})", err=True)
    return {**vlm_values, "images": len(sizes), "image_size": tuple(f"{w}x{h}" for w, h in sizes)}
