"""VLM runs in the calibration workflow: the matrix entries, estimate + measure + store, re-estimation.

A VLM entry is a `VlmCase` (the decoder's `RunConfig` plus the `VlmRun`); the store keeps the
VlmRun under `run_config["vlm"]`, so a stored row re-estimates with `estimate_vlm`.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict, dataclass, replace
from itertools import product

from vramplan.planner.specs import RunConfig
from vramplan.planner.vision import vlm_spec_from_config
from vramplan.planner.vision.run import VlmRun
from vramplan.planner.vlm_estimate import estimate_vlm

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
    return cases


def _spec(name: str, config: dict):
    return vlm_spec_from_config(config, name, source="probe")


def measure_and_store_vlm(store: Store, model_name: str, case: VlmCase, source: str, environment: dict, steps: int = 3, command: str | None = None) -> RunRecord:
    """`runner.measure_and_store` for a VLM case."""
    from .runner import is_oom

    config = VLM_PROBE_MODELS[model_name]
    predicted = estimate_vlm(_spec(model_name, config), case.run, case.vlm).breakdown
    started = time.perf_counter()
    outcome, error, result = "ok", None, {}
    try:
        from .vlm_probe import measure_vlm_cpu

        result = measure_vlm_cpu(config, case.run, case.vlm, steps=steps)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        outcome = "oom" if is_oom(exc) else "error"
        error = f"{type(exc).__name__}: {exc}"[:2000] + "\n" + "".join(traceback.format_exception_only(type(exc), exc))[-500:]
    record = RunRecord(
        source=source, outcome=outcome, error_message=error, model_name=model_name, model_config=config,
        run_config={**asdict(case.run), "vlm": case.vlm.as_dict()},
        device_name=environment["device_name"], device_total_bytes=environment.get("device_total_bytes"),
        stack=environment["stack"], environment=environment,
        estimate={"terms": predicted.by_name(), "at_peak": predicted.at_peak(), "peak_phase": predicted.peak_phase,
                  "trainable_by_component": result.get("trainable_by_component")},
        est_peak_allocated_bytes=predicted.peak_allocated_bytes, est_peak_reserved_bytes=predicted.peak_reserved_bytes,
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
    from .runner import run_config_from_dict

    values = dict(record.run_config)
    vlm = VlmRun.from_dict(values.pop("vlm"))
    return estimate_vlm(_spec(record.model_name, record.model_config), run_config_from_dict(values), vlm, None, corrections).breakdown


def vlm_label(record: RunRecord) -> str:
    """The error table's group of a VLM row: method, family and stage."""
    vlm = record.run_config["vlm"]
    return f"{record.run_config['method']} {record.model_config.get('model_type')} stage {vlm['stage']}"
