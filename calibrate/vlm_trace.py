"""A full-size VLM training step on fake tensors: `fake_trace.trace_step` for LLaVA and Qwen2-VL.

The model is built on meta by `vlm_build.build_vlm` and made fake by `fake_trace.materialize_fake`,
with `fake_trace.trace_patches`, as the text traces are. What differs is the batch: a VLM reads
the *values* of a few small integer tensors (where the image placeholders sit in `input_ids`,
Qwen2-VL's `image_grid_thw`, the vision attention's `cu_seqlens` and the M-RoPE position ids)
and turns them into Python numbers (`.tolist()`, `.item()`, `torch.split` sizes), which a fake
tensor cannot answer. So:

* token ids, labels, `mm_token_type_ids` and the grid are real tensors of the `_Values` subclass:
  an op on them alone runs with the fake mode switched off (its result is real, and `_Values`
  again), an op that also takes a fake tensor (the embedding lookup, `masked_scatter`, the loss)
  runs fake as usual; the pixels are fake;
* Qwen-VL's `get_rope_index` and the tower's `get_vision_position_ids` build tensors with
  factories (`torch.zeros`, `torch.tensor(list)`), which the fake mode would make fake: they run
  outside it (`_on_values`).

Real tensors made this way are small (int64 ids and positions, the cu_seqlens) and the
`LiveTensorTracker` counts them as it counts the fake ones. Everything else, the vision tower,
the projector and the LLM, runs on fake tensors as in the text traces.
"""

from __future__ import annotations

import contextlib
import time
import warnings

import torch

from vramplan.planner.specs import RunConfig
from vramplan.planner.vision import vlm_spec_from_config
from vramplan.planner.vision.run import VlmRun

from .cpu_probe import describe_model, make_optimizer, summarize
from .cpu_tracker import LiveTensorTracker, unique_storage_bytes
from .fake_trace import CUDA_BLOCK, _is_fake, _patched, materialize_fake, trace_patches
from .vlm_build import build_vlm, trainable_by_component
from .vlm_probe import run_vlm_steps, vlm_inputs


class _Values(torch.Tensor):
    """A small integer tensor whose values the model reads (token ids, labels, the grid, and what is
    computed from them alone): its ops run outside the fake mode, so `.tolist()`/`.item()` answer;
    an op that also takes a fake tensor (the embedding lookup, `masked_scatter`, the loss) runs fake
    as usual and returns plain fake tensors."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        from torch._subclasses.fake_tensor import unset_fake_temporarily
        from torch.utils._pytree import tree_flatten, tree_map

        kwargs = kwargs or {}
        fake = any(_is_fake(t) for t in tree_flatten((args, kwargs))[0])
        if fake and func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__):
            # a boolean mask of values indexing a fake tensor (Qwen3-VL's DeepStack rows): its indices,
            # taken outside the fake mode, as the real op takes them (a fake nonzero has no size)
            args = (args[0], _mask_indices(args[1]), *args[2:])
        # the fake mode takes plain tensors only: unwrap (a view of the same storage, no copy)
        args, kwargs = tree_map(lambda t: t.as_subclass(torch.Tensor) if isinstance(t, cls) else t, (args, kwargs))
        with torch._C.DisableTorchFunctionSubclass():
            if fake:
                return func(*args, **kwargs)
            with unset_fake_temporarily():
                out = func(*args, **kwargs)
        return tree_map(lambda t: t.as_subclass(cls) if isinstance(t, torch.Tensor) and not _is_fake(t) else t, out)


def _mask_indices(index):
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    parts, out = index if isinstance(index, tuple) else (index,), []
    for part in parts:
        if isinstance(part, _Values) and part.dtype == torch.bool:
            with torch._C.DisableTorchFunctionSubclass(), unset_fake_temporarily():
                out += [i.as_subclass(_Values) for i in part.as_subclass(torch.Tensor).nonzero(as_tuple=True)]
        else:
            out.append(part)
    return tuple(out)


def _real_values(inputs: dict) -> dict:
    """The batch with its integer tensors as `_Values` (their values steer the model) and the pixels fake."""
    out = {}
    for key, value in inputs.items():
        if value.is_floating_point():
            out[key] = torch.empty(tuple(value.shape), dtype=value.dtype)  # fake: created under the fake mode
        else:
            out[key] = value.as_subclass(_Values)
    return out


def _on_values(method):
    """`method` run outside the fake mode, its tensors returned as `_Values` (its inputs must be real)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    from torch.utils._pytree import tree_map

    def wrapper(*args, **kwargs):
        with unset_fake_temporarily():
            out = method(*args, **kwargs)
        return tree_map(lambda t: t.as_subclass(_Values) if isinstance(t, torch.Tensor) and not _is_fake(t) else t, out)

    return wrapper


# helpers that build position ids from the grid and the token values with Python loops and
# factories (`torch.zeros`, `torch.tensor(list)`), which under the fake mode would make fake tensors:
# Qwen-VL's M-RoPE index (a method) and the vision tower's 2D position ids (a module function)
ROPE_INDEX_CLASSES = (("qwen2_vl", "Qwen2VLModel"), ("qwen2_5_vl", "Qwen2_5_VLModel"), ("qwen3_vl", "Qwen3VLModel"))
# Qwen3-VL also resamples its learned position table per grid (indices and weights from the grid)
VALUE_FUNCTIONS = (("qwen2_vl", "get_vision_position_ids"), ("qwen3_vl", "get_vision_position_ids"),
                   ("qwen3_vl", "get_vision_interpolation_indices_and_weights"))


def _modeling(name: str):
    import importlib

    return importlib.import_module(f"transformers.models.{name}.modeling_{name}")


# Idefics3/SmolVLM drop all-zero padding tiles by boolean indexing, a shape that depends on the pixel
# values (a fake tensor has none): the traced batch has no padding tiles, so every tile is kept
TILED_CLASSES = (("idefics3", "Idefics3Model"), ("smolvlm", "SmolVLMModel"))


def _all_tiles_real(self, pixel_values, pixel_attention_mask=None, **kwargs):
    """`get_image_features` with every tile real: the same bf16 copy of the pixels (there by index, here by
    clone), a real all-true patch mask (its values steer the position ids and the mask skip), the tower
    and the connector, the features split per example."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    batch, images = pixel_values.shape[:2]
    pixel_values = pixel_values.to(dtype=self.dtype).view(batch * images, *pixel_values.shape[2:]).clone()
    patch = self.config.vision_config.patch_size
    with unset_fake_temporarily():
        mask = torch.ones((batch * images, pixel_values.shape[2] // patch, pixel_values.shape[3] // patch), dtype=torch.bool).as_subclass(_Values)
    outputs = self.vision_model(pixel_values=pixel_values, patch_attention_mask=mask, **{**kwargs, "return_dict": True})
    features = self.connector(outputs.last_hidden_state)
    outputs.pooler_output = [f.reshape(-1, f.shape[-1]) for f in features.split([images] * batch)]
    return outputs


@contextlib.contextmanager
def vlm_trace_patches():
    """The helpers above run on real values (see `_on_values`), restored on exit."""
    with contextlib.ExitStack() as stack:
        for module_name, class_name in ROPE_INDEX_CLASSES:
            cls = getattr(_modeling(module_name), class_name)
            stack.enter_context(_patched(cls, "get_rope_index", _on_values(cls.get_rope_index)))
        for module_name, class_name in TILED_CLASSES:
            stack.enter_context(_patched(getattr(_modeling(module_name), class_name), "get_image_features", _all_tiles_real))
        for module_name, function in VALUE_FUNCTIONS:
            module = _modeling(module_name)
            stack.enter_context(_patched(module, function, _on_values(getattr(module, function))))
        yield


def trace_vlm_step(hf_config: dict, run: RunConfig, vlm: VlmRun, steps: int = 2, seed: int = 0, round_to: int | None = None) -> dict:
    """Trace `steps` training steps of a VLM on fake tensors; `trace_step`'s keys plus `trainable_by_component`."""
    from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    cuda = run.device_kind == "cuda"
    if round_to is None:
        round_to = CUDA_BLOCK if cuda else 1
    spec = vlm_spec_from_config(hf_config, hf_config.get("model_type", "vlm"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_vlm(hf_config, run, vlm, meta=True)
        build_s = time.perf_counter() - t0
        notes = list(getattr(model, "vramplan_notes", []))
        if cuda:
            notes.append("CUDA emulated on fake CPU tensors: bool dropout masks, foreach optimizer, 512-byte blocks")
        fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        tracker = LiveTensorTracker(round_to=round_to)
        with trace_patches(run), vlm_trace_patches(), fake_mode, tracker:
            with tracker.phase("load", step=-1):
                materialize_fake(model, run)
            extra = describe_model(tracker, model)
            extra["trainable_by_component"] = trainable_by_component(model, spec.model_type)
            trainable = [p for p in model.parameters() if p.requires_grad]
            with unset_fake_temporarily():  # bnb builds its quantization maps with .tolist()
                optimizer = make_optimizer(run, trainable, foreach=True if cuda else None)
            with tracker.phase("inputs", step=-1):
                with unset_fake_temporarily():  # token ids, labels and the grid hold real values
                    inputs = vlm_inputs(spec, run, vlm, fake=True, seed=seed)
                inputs = _real_values(inputs)
            extra["input_bytes"] = unique_storage_bytes(list(inputs.values()))
            extra.update(run_vlm_steps(tracker, model, optimizer, run, inputs, steps, record_loss=False))
    extra.update(seconds=time.perf_counter() - t0, build_seconds=build_s, mode="fake", round_to=round_to,
                 notes=notes, run=run, steps=steps, seed=seed)
    return summarize(tracker, steps, extra)


def trace_document(resolved, run: RunConfig, vlm: VlmRun | None = None) -> dict:
    """`calibrate --trace` on a vision-language model: `workflow.trace`'s document, the VLM traced
    (stage 2, one image of the family's default size unless `vlm` says otherwise)."""
    from vramplan.planner.vision import vlm_spec_for
    from vramplan.planner.vlm_estimate import estimate_vlm

    from .workflow import trace_summary

    vlm = vlm or VlmRun()
    estimate = estimate_vlm(vlm_spec_for(resolved), run, vlm)
    result = trace_vlm_step(resolved.config, run, vlm)
    return {
        **trace_summary(resolved, run, estimate.breakdown, result),
        "stage": vlm.stage,
        "image_tokens": estimate.plan.llm_tokens,
        "vlm": vlm.as_dict(),
        "trainable_by_component": result.get("trainable_by_component"),
    }
