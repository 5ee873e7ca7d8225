"""Calibration matrices: which configs to measure, sized for the device and the preset.

Each entry is (model name, RunConfig). The CPU presets use the small probe configs (same
architectures, same code paths, seconds per run); the CUDA presets use real catalog models.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import product

from vramplan.planner.errors import ConfigError
from vramplan.planner.methods import METHODS
from vramplan.planner.specs import RunConfig

PRESETS = ("quick", "standard", "full")
DEVICES = ("cuda", "cpu", "trace")  # a GPU, the CPU tracker, full-size fake-tensor traces


def _cpu_quick() -> list[tuple[str, RunConfig]]:
    base = RunConfig(batch=2, seq_len=256, device_kind="cpu", precision="bf16")
    runs = [("probe-llama", replace(base, method=m, grad_ckpt=c)) for m, c in product(METHODS, (True, False))]
    variations = [
        dict(method="lora", dropout=0.0, grad_ckpt=False),
        dict(method="qlora", dropout=0.0, grad_ckpt=False),
        dict(method="lora", rank=64, grad_ckpt=False),
        dict(method="qlora", targets=("attention",), grad_ckpt=False),
        dict(method="lora", batch=4, seq_len=128, grad_ckpt=False),
        dict(method="lora", attention="eager", grad_ckpt=False),
        dict(method="lora", optimizer="adamw-8bit"),
        dict(method="full", optimizer="sgd", grad_ckpt=False),
        dict(method="lora", adapter_dtype="bf16", grad_ckpt=False),
        dict(method="lora", precision="bf16-mixed", grad_ckpt=False),
        dict(method="full", precision="fp32"),
    ]
    runs += [("probe-llama", replace(base, **change)) for change in variations]
    for model in ("probe-qwen3", "probe-qwen2"):
        runs += [(model, replace(base, method=m, grad_ckpt=False)) for m in ("full", "lora", "qlora", "dora")]
    return runs


def _cpu_standard() -> list[tuple[str, RunConfig]]:
    runs = _cpu_quick()
    base = RunConfig(device_kind="cpu", precision="bf16", grad_ckpt=False)
    for method, rank, targets, (batch, seq) in product(
        ("lora", "qlora", "dora", "qdora"), (8, 32), (("attention",), ("all-linear",)), ((1, 512), (4, 128))
    ):
        runs.append(("probe-llama", replace(base, method=method, rank=rank, targets=targets, batch=batch, seq_len=seq)))
    return runs + _cpu_bottleneck() + _cpu_families() + _cpu_savers() + _cpu_packing() + _cpu_moe() + _cpu_gpt_oss_held_out() + _cpu_kbit_no_upcast() + _cpu_grad_accum()


def _cpu_gpt_oss_held_out() -> list[tuple[str, RunConfig]]:
    """gpt-oss beyond the MoE matrix: other shapes, the router with the experts, DoRA; held out,
    measured after the gpt-oss terms were final."""
    model = "probe-gpt-oss"
    base = RunConfig(device_kind="cpu", precision="bf16", batch=2, seq_len=256, dropout=0.0)
    return [(model, replace(base, **change)) for change in (
        dict(method="lora", targets=("attention",), batch=1, seq_len=512),
        dict(method="qlora", targets=("gate_up_proj", "down_proj")),
        dict(method="full", grad_ckpt=False, batch=4, seq_len=128),
        dict(method="lora", targets=("router", "gate_up_proj", "down_proj"), rank=8, grad_ckpt=False),
        dict(method="dora", targets=("attention",), batch=1, seq_len=384),
    )]


def _cpu_savers() -> list[tuple[str, RunConfig]]:
    """The memory savers (issue 14): chunked loss (a soft-capped and a tied head too), offloaded
    checkpoint inputs, and both together."""
    base = RunConfig(device_kind="cpu", precision="bf16", batch=2, seq_len=256, method="lora")
    chunked = dict(loss="chunked", loss_chunk=128)
    return [
        ("probe-llama", replace(base, **chunked)),
        ("probe-llama", replace(base, grad_ckpt=False, **chunked)),
        ("probe-llama", replace(base, method="qlora", **chunked)),
        ("probe-llama", replace(base, method="full", grad_ckpt=False, loss="chunked", loss_chunk=256)),
        ("probe-gemma2", replace(base, attention="eager", **chunked)),
        ("probe-qwen3", replace(base, grad_ckpt=False, **chunked)),
        ("probe-llama", replace(base, offload_activations=True)),
        ("probe-llama", replace(base, method="qlora", offload_activations=True)),
        ("probe-llama", replace(base, offload_activations=True, **chunked)),
    ]


def _cpu_kbit_no_upcast() -> list[tuple[str, RunConfig]]:
    """--no-kbit-upcast (issue 14): 4-bit base with embeddings, norms and lm_head left 16-bit, so the
    residual stream stays 16-bit too; a tied soft-capped head, q/k norms, and with the other savers."""
    base = RunConfig(device_kind="cpu", precision="bf16", batch=2, seq_len=256, method="qlora", kbit_upcast=False)
    return [
        ("probe-llama", base),
        ("probe-llama", replace(base, grad_ckpt=False)),
        ("probe-llama", replace(base, method="qdora")),
        ("probe-llama", replace(base, offload_activations=True, loss="chunked", loss_chunk=128)),
        ("probe-gemma2", replace(base, attention="eager")),
        ("probe-qwen3", replace(base, grad_ckpt=False)),
        ("probe-qwen2", replace(base, targets=("attention",), rank=4)),
    ]


def _cpu_grad_accum() -> list[tuple[str, RunConfig]]:
    """Gradient accumulation: the kept gradients live through the later micro-batches."""
    base = RunConfig(device_kind="cpu", precision="bf16", batch=2, seq_len=256, method="lora", grad_accum=4)
    return [
        ("probe-llama", base),
        ("probe-llama", replace(base, grad_ckpt=False, grad_accum=2)),
        ("probe-llama", replace(base, method="qlora")),
        ("probe-llama", replace(base, method="dora", targets=("attention",))),
        ("probe-llama", replace(base, method="full", grad_ckpt=False, grad_accum=2)),
        ("probe-llama", replace(base, method="full")),
        ("probe-qwen3", replace(base, rank=64)),
    ]


def _cpu_packing() -> list[tuple[str, RunConfig]]:
    """--packing: examples packed by position ids (an explicit block-diagonal mask for SDPA)."""
    base = RunConfig(device_kind="cpu", precision="bf16", batch=1, seq_len=384, packing=True, grad_ckpt=False)
    return [
        ("probe-llama", replace(base, method="lora")),
        ("probe-llama", replace(base, method="lora", grad_ckpt=True, batch=3, seq_len=192)),
        ("probe-qwen2", replace(base, method="qlora")),
        ("probe-qwen3", replace(base, method="dora")),
        ("probe-qwen3", replace(base, method="full", batch=2, seq_len=192)),
        ("probe-qwen2", replace(base, method="adapter", grad_ckpt=True)),
    ]


def _cpu_families() -> list[tuple[str, RunConfig]]:
    """Every catalog family measured (issue 13): the LoRA-style methods with checkpointing on and
    off, and full fine-tuning, on one probe per family the runs above do not cover."""
    from .probe_models import FAMILY_PROBES

    runs = []
    for model in FAMILY_PROBES:
        # Gemma-2 has no SDPA path in transformers (soft-capped scores): eager is what runs
        attention = "eager" if model == "probe-gemma2" else "sdpa"
        base = RunConfig(device_kind="cpu", precision="bf16", batch=2, seq_len=256, attention=attention)
        runs += [(model, replace(base, method=m, grad_ckpt=c)) for m, c in product(("lora", "qlora", "dora"), (True, False))]
        runs.append((model, replace(base, method="full", grad_ckpt=False)))
        # held out: measured after the family terms were final (a 4-bit DoRA, which no family run above used)
        runs.append((model, replace(base, method="qdora", grad_ckpt=False)))
    return runs


def _cpu_moe() -> list[tuple[str, RunConfig]]:
    """Mixture of experts (issue 13): LoRA and QLoRA on attention only and on all-linear (router and
    fused experts too), and full fine-tuning, checkpointing on and off. peft refuses dropout on the
    experts' parameters, so these run without it; DoRA (refused on the experts) on attention only."""
    from .probe_models import MOE_PROBES

    base = RunConfig(device_kind="cpu", precision="bf16", batch=2, seq_len=256, dropout=0.0)
    runs = []
    for model in MOE_PROBES:
        runs += [
            (model, replace(base, method=m, targets=t, grad_ckpt=c))
            for m, t, c in product(("lora", "qlora"), (("all-linear",), ("attention",)), (True, False))
        ]
        runs += [(model, replace(base, method="full", grad_ckpt=c)) for c in (True, False)]
        runs += [(model, replace(base, method="dora", targets=("attention",), grad_ckpt=c)) for c in (True, False)]
        # the experts alone (peft target_parameters, gate_up at rank 2r): held out, measured after the MoE terms were final
        experts = ("gate_up_proj", "down_proj")
        runs += [(model, replace(base, method=m, targets=experts, grad_ckpt=c)) for m, c in (("lora", True), ("lora", False), ("qlora", False))]
    # the router aux loss on (output_router_logits): held out, measured after its term was final
    runs += [("probe-mixtral-aux", replace(base, method=m, targets=t, grad_ckpt=c)) for m, t, c in (
        ("lora", ("attention",), True), ("lora", ("all-linear",), False), ("qlora", ("attention",), False))]
    return runs


def _cpu_bottleneck() -> list[tuple[str, RunConfig]]:
    """Adapter tuning: each placement on each probe family, then its own settings one at a time."""
    base = RunConfig(device_kind="cpu", precision="bf16", grad_ckpt=False, batch=2, seq_len=256)
    runs = [
        (model, replace(base, method=method))
        for model, method in product(("probe-qwen3", "probe-qwen2"), ("adapter", "adapter-pfeiffer", "qadapter"))
    ]
    variations = [
        dict(method_options={"adapter_size": 64}),
        dict(method_options={"adapter_act": "gelu"}),
        dict(method_options={"adapter_act": "silu", "adapter_size": 8}),
        dict(adapter_dtype="bf16"),
        dict(precision="bf16-mixed"),
        dict(batch=4, seq_len=128),
        dict(optimizer="adamw-8bit"),
        dict(attention="eager"),
        dict(precision="fp32", grad_ckpt=True),
    ]
    runs += [("probe-llama", replace(base, method="adapter", **change)) for change in variations]
    runs += [("probe-llama", replace(base, method="adapter-pfeiffer", **change)) for change in variations[:2]]
    runs += [("probe-llama", replace(base, method="qadapter", **change)) for change in variations[4:6]]
    return runs + _cpu_nf4_autocast()


def _cpu_nf4_autocast() -> list[tuple[str, RunConfig]]:
    """A 4-bit base under autocast (fp32 stream, 16-bit matmuls): each quantizing method, both 16-bit types."""
    base = RunConfig(device_kind="cpu", grad_ckpt=False, batch=1, seq_len=384)
    return [
        (model, replace(base, method=method, precision=precision))
        for model, method, precision in (
            ("probe-llama", "qlora", "bf16-mixed"),
            ("probe-llama", "qdora", "fp16-mixed"),
            ("probe-qwen2", "qadapter", "fp16-mixed"),
            ("probe-qwen3", "qlora", "fp16-mixed"),
            ("probe-qwen3", "qadapter", "bf16-mixed"),
        )
    ] + [  # LoRA-style adapters under autocast, with and without dropout (held out for the DoRA/autocast rules)
        (model, RunConfig(device_kind="cpu", grad_ckpt=False, batch=2, seq_len=192, method=method, precision=precision, dropout=dropout))
        for model, method, precision, dropout in (
            ("probe-qwen2", "dora", "bf16-mixed", 0.0),
            ("probe-qwen3", "qdora", "bf16-mixed", 0.05),
            ("probe-llama", "lora", "fp16-mixed", 0.0),
            ("probe-qwen2", "qlora", "bf16-mixed", 0.0),
            ("probe-llama", "dora", "fp16-mixed", 0.05),
        )
    ]


def _cpu_full() -> list[tuple[str, RunConfig]]:
    runs = _cpu_standard()
    base = RunConfig(device_kind="cpu", precision="bf16", batch=2, seq_len=256)
    for method, ckpt, optimizer in product(METHODS, (True, False), ("adamw-8bit", "sgd")):
        for model in ("probe-qwen3", "probe-qwen2"):
            runs.append((model, replace(base, method=method, grad_ckpt=ckpt, optimizer=optimizer)))
    return runs


def _cuda(preset: str) -> list[tuple[str, RunConfig]]:
    models = {"quick": ("Qwen/Qwen2.5-0.5B",), "standard": ("Qwen/Qwen2.5-0.5B", "meta-llama/Llama-3.2-1B"),
              "full": ("Qwen/Qwen2.5-0.5B", "meta-llama/Llama-3.2-1B", "Qwen/Qwen3-1.7B", "meta-llama/Meta-Llama-3-8B")}[preset]
    seqs = {"quick": (512,), "standard": (512, 2048), "full": (512, 2048)}[preset]
    runs = []
    for model, method, ckpt, seq in product(models, METHODS, (True, False), seqs):
        runs.append((model, RunConfig(method=method, grad_ckpt=ckpt, seq_len=seq, batch=2, device_kind="cuda")))
        if preset != "quick":
            runs.append((model, RunConfig(method=method, grad_ckpt=ckpt, seq_len=seq, batch=1, rank=64, targets=("attention",), optimizer="paged-adamw-8bit", device_kind="cuda")))
    return runs


TRACE_MODELS = {
    "quick": ("meta-llama/Meta-Llama-3-8B",),
    # one real size of every catalog family beside the first three (issue 13)
    "standard": ("meta-llama/Meta-Llama-3-8B", "Qwen/Qwen2.5-7B", "mistralai/Mistral-7B-v0.1",
                 "meta-llama/Llama-2-7b-hf", "Qwen/Qwen3-4B", "google/gemma-2-2b", "microsoft/Phi-3-mini-4k-instruct",
                 "google/gemma-2b", "google/gemma-3-1b-it"),
    "full": ("meta-llama/Meta-Llama-3-8B", "Qwen/Qwen2.5-7B", "mistralai/Mistral-7B-v0.1", "Qwen/Qwen3-8B", "google/gemma-2-9b"),
}


def _trace(preset: str) -> list[tuple[str, RunConfig]]:
    """Full-size steps on fake tensors, imitating CUDA (bool dropout masks, foreach AdamW)."""
    runs = []
    for model, method, ckpt in product(TRACE_MODELS[preset], METHODS, (True, False)):
        runs.append((model, RunConfig(method=method, grad_ckpt=ckpt, batch=1, seq_len=2048, device_kind="cuda")))
    return runs + (_trace_moe() + _trace_deepseek_v2() + _trace_gpt_oss() + _trace_long_context() + _trace_grad_accum() if preset == "standard" else [])


def _trace_grad_accum() -> list[tuple[str, RunConfig]]:
    """Gradient accumulation at full size: 4 micro-batches per step."""
    base = RunConfig(batch=1, seq_len=2048, device_kind="cuda", grad_accum=4)
    llama = "meta-llama/Llama-3.1-8B"
    return [(llama, replace(base, method=m)) for m in ("lora", "qlora", "full")] + [
        (llama, replace(base, method="lora", grad_ckpt=False, targets=("attention",))),
    ]


def _trace_long_context() -> list[tuple[str, RunConfig]]:
    """16k tokens on a T4-like fp16 run (issue 14): the savers `recommend --seq-len 16384` turns on,
    where activations, not weights, make the peak."""
    base = RunConfig(batch=1, seq_len=16384, device_kind="cuda", precision="fp16", rank=16, targets=("attention",))
    savers = dict(loss="chunked", offload_activations=True, expandable_segments=True, kbit_upcast=False)
    llama = "meta-llama/Llama-3.1-8B"
    return [
        (llama, replace(base, method="qlora", targets=("all-linear",), optimizer="paged-adamw-8bit", **savers)),
        (llama, replace(base, method="qlora", **savers)),
        (llama, replace(base, method="qdora", **savers)),
        (llama, replace(base, method="qadapter", **savers)),
        (llama, replace(base, method="qlora", rank=4, loss="chunked", offload_activations=True)),
        (llama, replace(base, method="qlora", kbit_upcast=False)),
        ("Qwen/Qwen2.5-7B", replace(base, method="qlora", loss="chunked", kbit_upcast=False)),
        ("mistralai/Mistral-7B-v0.1", replace(base, method="lora", precision="bf16", loss="chunked")),
    ]


TRACE_MOE_MODELS = ("allenai/OLMoE-1B-7B-0924", "Qwen/Qwen3-30B-A3B", "mistralai/Mixtral-8x7B-v0.1")


def _trace_moe() -> list[tuple[str, RunConfig]]:
    """Mixtures of experts at full size (issue 13): LoRA/QLoRA on attention and all-linear (router and
    experts), DoRA on attention, full fine-tuning; without dropout, which peft refuses on the experts."""
    base = RunConfig(batch=1, seq_len=2048, device_kind="cuda", dropout=0.0)
    runs = []
    for model in TRACE_MOE_MODELS:
        runs += [
            (model, replace(base, method=m, targets=t))
            for m, t in product(("lora", "qlora"), (("attention",), ("all-linear",)))
        ]
        runs += [
            (model, replace(base, method="lora", targets=("attention",), grad_ckpt=False)),
            (model, replace(base, method="dora", targets=("attention",))),
            (model, replace(base, method="full")),
            # held out, traced after the MoE terms were final: the experts alone, QLoRA without checkpointing
            (model, replace(base, method="lora", targets=("gate_up_proj", "down_proj"))),
            (model, replace(base, method="qlora", targets=("attention",), grad_ckpt=False)),
        ]
    return runs


def _trace_deepseek_v2() -> list[tuple[str, RunConfig]]:
    """DeepSeek-V2-Lite at full size (issue 13). device_kind cpu: the fake tensors run CPU kernels, and
    MLA's SDPA (v narrower than q/k) takes the CPU math path there, which is what the planner's CPU
    rules model (CUDA's memory-efficient kernel cannot be traced here)."""
    base = RunConfig(batch=1, seq_len=2048, device_kind="cpu", dropout=0.0)
    model = "deepseek-ai/DeepSeek-V2-Lite"
    return [(model, replace(base, method=m, targets=t, grad_ckpt=c)) for m, t, c in (
        ("qlora", ("attention",), True), ("lora", ("all-linear",), True), ("qlora", ("all-linear",), True),
        ("lora", ("attention",), False), ("full", ("all-linear",), True),
        # held out, traced after the DeepSeek terms were final
        ("lora", ("gate_up_proj", "down_proj"), True), ("qlora", ("attention",), False),
    )]


def _trace_gpt_oss() -> list[tuple[str, RunConfig]]:
    """gpt-oss-20b at full size (issue 13): eager attention with sinks, fused experts with biases."""
    base = RunConfig(batch=1, seq_len=2048, device_kind="cuda", dropout=0.0)
    model = "openai/gpt-oss-20b"
    return [(model, replace(base, **change)) for change in (
        dict(method="lora", targets=("attention",)), dict(method="qlora", targets=("attention",)),
        dict(method="lora", targets=("attention",), grad_ckpt=False), dict(method="dora", targets=("attention",)),
        dict(method="full"),
        # held out: the experts alone, QLoRA without checkpointing, the router with the experts
        dict(method="lora", targets=("gate_up_proj", "down_proj")), dict(method="qlora", targets=("attention",), grad_ckpt=False),
        dict(method="lora", targets=("router", "gate_up_proj", "down_proj"), batch=2, seq_len=1024),
    )]


def calibration_matrix(device: str, preset: str) -> list[tuple[str, RunConfig]]:
    """The configs one `vramplan calibrate` run measures.

    Raises:
        ConfigError: unknown preset or device.
    """
    if preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r} is not one of: {', '.join(PRESETS)}")
    if device == "cpu":
        from .vlm_runner import vlm_cpu_matrix  # tiny LLaVA and Qwen2-VL, both stages

        return {"quick": _cpu_quick, "standard": _cpu_standard, "full": _cpu_full}[preset]() + vlm_cpu_matrix(preset)
    if device == "cuda":
        return _cuda(preset)
    if device == "trace":
        from .vlm_runner import vlm_trace_matrix  # full-size LLaVA-1.5-7B and Qwen2-VL-7B/2B

        return _trace(preset) + vlm_trace_matrix(preset)
    raise ConfigError(f"--device {device!r} is not one of: {', '.join(DEVICES)}")
