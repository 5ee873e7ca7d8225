"""The `estimate --json` document (schema documented in the README)."""

from __future__ import annotations

from ..planner.breakdown import PHASES
from ..planner.limits import MethodResult
from ..planner.moe import routing_summary
from ..planner.savers import host_bytes
from ..planner.stack import stack_for


def config_dict(result: MethodResult) -> dict:
    run = result.estimate.run
    return {
        "method": run.method,
        "rank": run.rank if run.uses_rank else None,
        "alpha": run.lora_alpha if run.uses_rank else None,
        "dropout": run.dropout if run.uses_rank else None,
        "targets": list(result.estimate.adapted),
        "batch": run.batch,
        "grad_accum": run.grad_accum,
        "seq_len": run.seq_len,
        "grad_ckpt": run.grad_ckpt,
        "optimizer": run.optimizer,
        "precision": run.precision,
        "attention": run.attention,
        "double_quant": run.double_quant if run.is_quantized else None,
        "adapter_dtype": run.adapter_dtype if run.has_adapter else None,
        "method_options": method_options_dict(result.estimate),
        "loss": run.loss,
        "loss_chunk": run.loss_chunk if run.loss == "chunked" else None,
        "offload_activations": run.offload_activations,
        "packing": run.packing,
        "expandable_segments": run.expandable_segments,
    }


def method_options_dict(est) -> dict:
    """The method's own settings as resolved for this model (e.g. an Adapter's bottleneck size)."""
    adapter = est.run.method_record.adapter
    return adapter.resolved_options(est.model, est.run) if adapter is not None else {}


def peak_fields(est) -> dict:
    """The peak statistics of one estimate (text or VLM) and whether it fits the GPU."""
    breakdown = est.breakdown
    return {
        "peak_phase": breakdown.peak_phase,
        "phase_allocated_bytes": {phase: breakdown.phase_total(phase) for phase in PHASES},
        "peak_allocated_bytes": breakdown.peak_allocated_bytes,
        "peak_reserved_bytes": breakdown.peak_reserved_bytes,
        "device_used_bytes": breakdown.device_used_bytes,
        "fits": est.fits,
        "headroom_bytes": est.headroom_bytes,
    }


def estimate_dict(result: MethodResult) -> dict:
    est = result.estimate
    breakdown = est.breakdown
    return {
        "method": est.run.method,
        "trainable_params": est.trainable_params,
        "components": breakdown.at_peak(),
        "component_stats": {term.name: term.stat for term in breakdown.terms},
        "component_notes": {term.name: term.note for term in breakdown.terms},
        "components_all_phases": breakdown.by_name(),
        **peak_fields(est),
        "max_batch": result.max_batch,
        "max_seq_len": result.max_seq_len,
        "calibration": est.calibration,
        "host_bytes": host_bytes(breakdown.terms),  # pinned host RAM of --offload-activations (planner/savers.py)
        "per_gpu": None if result.parallel is None else {
            "gpus": result.parallel.gpus, "strategy": result.parallel.strategy, "offload": result.parallel.offload,
            "host_bytes": result.host_bytes,
        },
        "config": config_dict(result),
    }


def stack_dict(run) -> dict:
    """The transformers version modelled and where it came from (planner/stack.py)."""
    stack = stack_for(run.transformers_version)
    return {"transformers": stack.transformers, "source": stack.source, "loss_path": stack.loss_path.key, "sdpa_enable_gqa": stack.sdpa_enable_gqa}


def estimate_document(results: list[MethodResult], model_note: str) -> dict:
    first = results[0].estimate
    gpu = first.gpu
    return {
        "model": {
            "name": first.model.name,
            "resolved_from": model_note,
            "model_type": first.model.model_type,
            "base_params": first.model.base_params,
        },
        "gpu": None if gpu is None else {"name": gpu.name, "key": gpu.key, "total_bytes": gpu.total_bytes, "bf16": gpu.bf16},
        "routing": routing_summary(first.model, first.run),  # mixtures of experts: the routing assumed; else null
        "stack": stack_dict(first.run),  # the transformers version whose memory paths were modelled
        "estimates": [estimate_dict(result) for result in results],
    }
