"""VLM runs in the calibration workflow: the matrix entries, estimate + measure + store, re-estimation.

A VLM entry is a `VlmCase` (the decoder's `RunConfig` plus the `VlmRun`); the store keeps the
VlmRun under `run_config["vlm"]`, so a stored row re-estimates with `estimate_vlm`.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, replace
from itertools import product

from vramplan.planner.specs import RunConfig
from vramplan.planner.vision import vlm_spec_from_config
from vramplan.planner.vision.run import VlmRun
from vramplan.planner.vlm_estimate import estimate_vlm

from .resume import run_settings
from .store import RunRecord, Store
from .vlm_build import VLM_PROBE_MODELS


@dataclass(frozen=True)
class VlmCase:
    """One VLM matrix entry; reads like a RunConfig where the workflow looks (method, batch, seq_len)."""

    run: RunConfig
    vlm: VlmRun

    def __getattr__(self, name):
        return getattr(self.run, name)


def vlm_cpu_matrix(preset: str) -> list[tuple[str, VlmCase]]:
    """Tiny LLaVA and Qwen2-VL: both stages, checkpointing on and off, LoRA and QLoRA, two image sizes."""
    if preset == "quick":
        return []
    base = RunConfig(device_kind="cpu", precision="bf16", batch=2, seq_len=512)
    cases = []
    for model, method, stage, ckpt in product(("probe-qwen2-vl", "probe-llava"), ("lora", "qlora"), (1, 2), (False, True)):
        cases.append((model, VlmCase(replace(base, method=method, grad_ckpt=ckpt), VlmRun(stage=stage, image_sizes=((224, 224),)))))
    # two larger images per example, one batch row: the vision side grows against the text side
    big = replace(base, batch=1, seq_len=640)
    for model, method, stage, ckpt in product(("probe-qwen2-vl",), ("lora", "qlora"), (1, 2), (False, True)):
        cases.append((model, VlmCase(replace(big, method=method, grad_ckpt=ckpt), VlmRun(stage=stage, images=2, image_sizes=((448, 336),)))))
    # PaliGemma (SigLIP, prefix-LM mask over a Gemma decoder) and SmolVLM (tiles, pixel shuffle)
    for model, method, stage, ckpt in product(("probe-paligemma", "probe-smolvlm"), ("lora", "qlora"), (1, 2), (False, True)):
        cases.append((model, VlmCase(replace(base, method=method, grad_ckpt=ckpt), VlmRun(stage=stage, image_sizes=((224, 224),)))))
    for model, ckpt in product(("probe-paligemma", "probe-smolvlm"), (False, True)):
        cases.append((model, VlmCase(replace(base, method="lora", grad_ckpt=ckpt), VlmRun(stage=2, vision="lora", image_sizes=((224, 224),)))))
    # held out: measured after the pixel-input, stem and embedding-leaf terms were final
    for model, ckpt in product(("probe-llava", "probe-qwen2-vl"), (True, False)):
        cases.append((model, VlmCase(replace(base, method="lora", grad_ckpt=ckpt), VlmRun(stage=2, vision="lora", image_sizes=((224, 224),)))))
    for ckpt in (True, False):
        cases.append(("probe-llava", VlmCase(replace(base, method="qlora", batch=1, seq_len=1280, grad_ckpt=ckpt), VlmRun(stage=1, images=2, image_sizes=((448, 448),)))))
    # held out: measured after the SigLIP, prefix-mask and tile terms were final (other sizes, batches, image counts)
    for model, run, vlm in (
        ("probe-paligemma", replace(base, method="qlora", batch=1, seq_len=768), VlmRun(stage=2, images=2, image_sizes=((640, 480),))),
        ("probe-paligemma", replace(base, method="lora", batch=3, seq_len=384, grad_ckpt=False), VlmRun(stage=1, image_sizes=((224, 224),))),
        ("probe-smolvlm", replace(base, method="lora", batch=1, seq_len=384), VlmRun(stage=2, image_sizes=((640, 200),))),
        ("probe-smolvlm", replace(base, method="qlora", grad_ckpt=False), VlmRun(stage=1, images=2, image_sizes=((300, 900),))),
        # Idefics3's class (SmolVLM-256M/500M-Instruct), measured after its terms (SmolVLM's) were final
        ("probe-idefics3", replace(base, method="lora"), VlmRun(stage=1, image_sizes=((224, 224),))),
        ("probe-idefics3", replace(base, method="qlora", grad_ckpt=False), VlmRun(stage=1, image_sizes=((640, 480),))),
        ("probe-idefics3", replace(base, method="qlora"), VlmRun(stage=2, image_sizes=((224, 224),))),
        ("probe-idefics3", replace(base, method="lora", grad_ckpt=False), VlmRun(stage=2, image_sizes=((640, 480),))),
        ("probe-idefics3", replace(base, method="qlora", grad_ckpt=False), VlmRun(stage=2, image_sizes=((800, 600),))),
        ("probe-idefics3", replace(base, method="lora", batch=1, seq_len=640), VlmRun(stage=1, images=2, image_sizes=((300, 900),))),
        ("probe-idefics3", replace(base, method="qlora", batch=1, seq_len=512), VlmRun(stage=2, image_sizes=((1024, 256),))),
        # measured after the checkpointed prefix-mask rule (mask and block ids only) was final
        ("probe-paligemma", replace(base, method="qlora", batch=3, seq_len=384), VlmRun(stage=2, image_sizes=((320, 240),))),
        ("probe-paligemma", replace(base, method="lora", batch=1, seq_len=640), VlmRun(stage=1, images=2, image_sizes=((224, 224),))),
    ):
        cases.append((model, VlmCase(run, vlm)))
    # Llama-3.2-Vision: cross-attention layers 1 and 3; every image is 4 tiles whatever its size
    for method, stage, ckpt in product(("lora", "qlora"), (1, 2), (False, True)):
        cases.append(("probe-mllama", VlmCase(replace(base, method=method, grad_ckpt=ckpt), VlmRun(stage=stage, image_sizes=((224, 224),)))))
    # held out: measured after the cross-attention terms were final
    one = replace(base, batch=1, seq_len=640)
    cases += [
        ("probe-mllama", VlmCase(replace(one, method="lora", grad_ckpt=True), VlmRun(stage=2, images=2, image_sizes=((448, 224),)))),
        ("probe-mllama", VlmCase(replace(one, method="qlora", grad_ckpt=False), VlmRun(stage=1, images=2, image_sizes=((300, 500),)))),
        ("probe-mllama", VlmCase(replace(one, method="lora", batch=3, seq_len=256, grad_ckpt=False), VlmRun(stage=2, image_sizes=((640, 480),)))),
    ]
    # Qwen3-VL (16-px patches, DeepStack mergers, a tower checkpointing leaves out of autograd)
    q3 = replace(base, seq_len=1024)
    for (batch, size), method, stage, ckpt in product(((2, (224, 224)), (1, (640, 480))), ("lora", "qlora"), (1, 2), (False, True)):
        images = 1 if batch == 2 else 2
        cases.append(("probe-qwen3-vl", VlmCase(replace(q3, batch=batch, method=method, grad_ckpt=ckpt), VlmRun(stage=stage, images=images, image_sizes=(size,)))))
    # held out: measured after the Qwen3-VL terms (unhooked tower, DeepStack sharing) were final
    for run, vlm in ((replace(q3, batch=3, method="lora"), VlmRun(stage=2, image_sizes=((800, 600),))),
                     (replace(q3, batch=1, method="qlora", grad_ckpt=False), VlmRun(stage=1, images=3, image_sizes=((320, 240),))),
                     (replace(q3, method="lora"), VlmRun(stage=2, vision="lora", image_sizes=((448, 448),))),
                     (replace(q3, method="lora", grad_ckpt=False), VlmRun(stage=2, vision="lora", image_sizes=((448, 448),)))):
        cases.append(("probe-qwen3-vl", VlmCase(run, vlm)))
    return cases


# full-size traces (issue 10's ground truth): two image sizes per model; LLaVA-1.5 resizes every
# image to 336x336, so its second case is two larger images per example instead
VLM_TRACE_MODELS = {
    "Qwen/Qwen2-VL-2B-Instruct": (VlmRun(image_sizes=((448, 448),)), VlmRun(image_sizes=((1344, 1008),))),
    "Qwen/Qwen2-VL-7B-Instruct": (VlmRun(image_sizes=((448, 448),)), VlmRun(image_sizes=((1344, 1008),))),
    "llava-hf/llava-1.5-7b-hf": (VlmRun(image_sizes=((336, 336),)), VlmRun(images=2, image_sizes=((1024, 768),))),
    # PaliGemma squares every image to 224 px: its second setting is two images per example
    "google/paligemma-3b-pt-224": (VlmRun(image_sizes=((224, 224),)), VlmRun(images=2, image_sizes=((640, 480),))),
    # SmolVLM resizes the longest edge to 2048 px: 4 x 3 tiles + global, then a wide 4 x 1 + global
    "HuggingFaceTB/SmolVLM2-500M-Video-Instruct": (VlmRun(image_sizes=((1024, 768),)), VlmRun(image_sizes=((2048, 512),))),
    # Llama-3.2-Vision pads every image to 4 tiles: the second setting is two images per example
    "meta-llama/Llama-3.2-11B-Vision-Instruct": (VlmRun(image_sizes=((560, 560),)), VlmRun(images=2, image_sizes=((1280, 720),))),
    "Qwen/Qwen3-VL-2B-Instruct": (VlmRun(image_sizes=((448, 448),)), VlmRun(image_sizes=((1344, 1008),))),
    "Qwen/Qwen3-VL-8B-Instruct": (VlmRun(image_sizes=((448, 448),)), VlmRun(image_sizes=((1344, 1008),))),
}


def vlm_trace_matrix(preset: str) -> list[tuple[str, VlmCase]]:
    """Full-size LLaVA-1.5-7B and Qwen2-VL-7B/2B on fake tensors: both stages, LoRA and QLoRA,
    checkpointing on and off, two image sizes; the text traces' batch 1 x 2048 on emulated CUDA."""
    if preset == "quick":
        return []
    base = RunConfig(batch=1, seq_len=2048, device_kind="cuda")
    cases = []
    for model, images in VLM_TRACE_MODELS.items():
        for vlm, method, stage, ckpt in product(images, ("lora", "qlora"), (1, 2), (True, False)):
            cases.append((model, VlmCase(replace(base, method=method, grad_ckpt=ckpt), replace(vlm, stage=stage))))
    # held out: measured after the pixel-input, stem and embedding-leaf terms were final
    two = replace(base, batch=2)
    for model, run, vlm in (
        ("Qwen/Qwen2-VL-7B-Instruct", replace(base, method="qlora"), VlmRun(stage=2, images=2, image_sizes=((896, 672),))),
        ("Qwen/Qwen2-VL-7B-Instruct", replace(base, method="lora", grad_ckpt=False), VlmRun(stage=1, images=2, image_sizes=((896, 672),))),
        ("Qwen/Qwen2-VL-2B-Instruct", replace(two, method="lora"), VlmRun(stage=2, image_sizes=((640, 480),))),
        ("Qwen/Qwen2-VL-2B-Instruct", replace(two, method="lora", grad_ckpt=False), VlmRun(stage=2, image_sizes=((640, 480),))),
        ("llava-hf/llava-1.5-7b-hf", replace(two, method="qlora"), VlmRun(stage=2, image_sizes=((800, 600),))),
        ("llava-hf/llava-1.5-7b-hf", replace(two, method="lora", grad_ckpt=False), VlmRun(stage=1, image_sizes=((800, 600),))),
        # held out: measured after the SigLIP, prefix-mask and tile terms were final
        ("google/paligemma-3b-pt-448", replace(base, method="qlora"), VlmRun(stage=2, image_sizes=((448, 448),))),
        ("HuggingFaceTB/SmolVLM2-500M-Video-Instruct", replace(two, method="lora", grad_ckpt=False), VlmRun(stage=1, image_sizes=((800, 600),))),
        # measured after the checkpointed prefix-mask rule was final
        ("google/paligemma-3b-pt-448", replace(two, method="lora"), VlmRun(stage=1, image_sizes=((448, 448),))),
    ):
        cases.append((model, VlmCase(run, vlm)))
    # held out: Llama-3.2-11B-Vision, measured after the cross-attention terms were final
    mllama = "meta-llama/Llama-3.2-11B-Vision-Instruct"
    cases += [
        (mllama, VlmCase(replace(two, method="qlora"), VlmRun(stage=2, image_sizes=((1280, 720),)))),
        (mllama, VlmCase(replace(base, method="lora", seq_len=1024, grad_ckpt=False), VlmRun(stage=1, images=3, image_sizes=((800, 600),)))),
    ]
    # held out: Qwen3-VL, measured after its terms were final; the 4B is in no other trace
    for model, run, vlm in (
        ("Qwen/Qwen3-VL-4B-Instruct", replace(two, method="qlora"), VlmRun(stage=2, image_sizes=((640, 480),))),
        ("Qwen/Qwen3-VL-4B-Instruct", replace(base, method="lora", grad_ckpt=False), VlmRun(stage=1, images=2, image_sizes=((896, 672),))),
        ("Qwen/Qwen3-VL-8B-Instruct", replace(two, method="lora"), VlmRun(stage=2, image_sizes=((800, 600),))),
    ):
        cases.append((model, VlmCase(run, vlm)))
    return cases


def vlm_model(name: str) -> tuple[dict, dict | None]:
    """(config.json, processor values) of a tiny probe VLM or a catalog VLM."""
    from vramplan.planner.catalog.vlm_models import VLM_CONFIGS

    if name in VLM_PROBE_MODELS:
        return VLM_PROBE_MODELS[name], None
    entry = VLM_CONFIGS[name]
    return entry["config"], entry.get("processor")


def _spec(name: str, config: dict):
    from vramplan.planner.catalog.vlm_models import VLM_CONFIGS

    if name in VLM_PROBE_MODELS:
        return vlm_spec_from_config(config, name, source="probe")
    return vlm_spec_from_config(config, name, VLM_CONFIGS.get(name, {}).get("processor"))


def measure_and_store_vlm(store: Store, model_name: str, case: VlmCase, source: str, environment: dict, steps: int = 3, command: str | None = None) -> RunRecord:
    """`runner.measure_and_store` for a VLM case."""
    from .runner import is_oom, tensor_peak_estimate

    config, _ = vlm_model(model_name)
    predicted = estimate_vlm(_spec(model_name, config), case.run, case.vlm).breakdown
    # a trace sees tensors only: the cuBLAS workspace is left out, as for the text traces
    allocated = tensor_peak_estimate(predicted) if source == "trace" else predicted.peak_allocated_bytes
    started = time.perf_counter()
    outcome, error, result = "ok", None, {}
    try:
        if source == "trace":
            from .vlm_trace import trace_vlm_step

            result = trace_vlm_step(config, case.run, case.vlm)
        else:
            from .vlm_probe import measure_vlm_cpu

            result = measure_vlm_cpu(config, case.run, case.vlm, steps=steps)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        outcome = "oom" if is_oom(exc) else "error"
        error = f"{type(exc).__name__}: {exc}"[:2000] + "\n" + "".join(traceback.format_exception_only(type(exc), exc))[-500:]
    record = RunRecord(
        source=source, outcome=outcome, error_message=error, model_name=model_name, model_config=config,
        run_config=run_settings(case),
        device_name=environment["device_name"], device_total_bytes=environment.get("device_total_bytes"),
        stack=environment["stack"], environment=environment,
        estimate={"terms": predicted.by_name(), "at_peak": predicted.at_peak(), "peak_phase": predicted.peak_phase,
                  "trainable_by_component": result.get("trainable_by_component")},
        est_peak_allocated_bytes=allocated, est_peak_reserved_bytes=predicted.peak_reserved_bytes,
        est_device_used_bytes=predicted.device_used_bytes, peak_allocated_bytes=result.get("steady_peak_bytes"),
        phases=result.get("steady_phase_peak_bytes", {}), categories=result.get("steady_breakdown", {}),
        command=command, duration_s=time.perf_counter() - started,
    )
    record_id = store.add_run(record)
    return RunRecord(**{**record.__dict__, "id": record_id})


def is_vlm_record(record: RunRecord) -> bool:
    return "vlm" in record.run_config


def vlm_estimate_for(record: RunRecord, corrections):
    """Re-estimate a stored VLM row with this version's model."""
    from .fit import as_measured
    from .runner import run_config_from_dict

    values = dict(record.run_config)
    vlm = VlmRun.from_dict(values.pop("vlm"))
    run = as_measured(record, run_config_from_dict(values))
    return estimate_vlm(_spec(record.model_name, record.model_config), run, vlm, None, corrections).breakdown


def vlm_label(record: RunRecord) -> str:
    """The error table's group of a VLM row: method, family and stage."""
    vlm = record.run_config["vlm"]
    return f"{record.run_config['method']} {record.model_config.get('model_type')} stage {vlm['stage']}"
