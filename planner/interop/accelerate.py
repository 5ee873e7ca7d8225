"""accelerate config files (`accelerate launch --config_file FILE script.py`), read and written.

An accelerate config says how a script is spread over devices — distributed_type (NO,
MULTI_GPU, FSDP, DEEPSPEED), num_processes, fsdp_config, deepspeed_config — and the autocast
dtype (mixed_precision); the model, method and batch live in the script. vramplan's export
therefore carries the rest of the plan as a comment line (`# vramplan-plan: {...}`), which
accelerate ignores and `--from` reads back; the accelerate keys win where both say something.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from ..plan_file import run_from_plan
from .common import Reader, method_parts
from .parallel import map_deepspeed, map_fsdp
from .plan_view import ExportPlan

KEY = "accelerate"
HEADER = "# vramplan-plan: "
NO_EFFECT = (
    "compute_environment", "debug", "downcast_bf16", "machine_rank", "main_training_function", "num_machines", "rdzv_backend",
    "same_network", "tpu_env", "tpu_use_cluster", "tpu_use_sudo", "use_cpu", "gpu_ids", "main_process_ip",
    "main_process_port", "dynamo_config", "enable_cpu_affinity", "ipex_config", "mpirun_config", "megatron_lm_config",
    "fp8_config", "parallelism_config", "tpu_name", "tpu_zone", "commands", "command_file", "dynamo_backend",
)
DISTRIBUTED = ("NO", "MULTI_GPU", "MULTI_CPU", "FSDP", "DEEPSPEED")


def detect(document: dict) -> bool:
    return "distributed_type" in document or "compute_environment" in document


def _header(path: Path) -> dict | None:
    """The plan a vramplan export put in its comment line, if any."""
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith(HEADER):
                plan = json.loads(line[len(HEADER):])
                return plan if isinstance(plan, dict) and isinstance(plan.get("config"), dict) else None
    except (OSError, ValueError):
        return None
    return None


def read(document: dict, path: Path):
    r = Reader(document, f"accelerate config {path}")
    plan = _header(path)
    if plan is not None:
        _from_plan(r, plan, path)
    else:
        r.note("an accelerate config holds no model, method, batch or sequence length: give them as flags or with another --from file")
    kind = str(r.get("distributed_type", "NO")).upper()
    processes = r.int("num_processes", 1)
    if kind not in DISTRIBUTED:
        r.problem("strategy", f"distributed_type {kind} is not modelled ({', '.join(DISTRIBUTED)} are); pass --strategy")
    elif kind in ("NO", "MULTI_CPU"):
        r.set("gpus", 1, "num_processes")
        r.set("strategy", None, "distributed_type")
        r.set("offload", "none", "distributed_type")
    else:
        r.set("gpus", processes, "num_processes")
        if kind == "MULTI_GPU":
            r.set("strategy", "ddp", "distributed_type")
            r.set("offload", "none", "distributed_type")
        elif kind == "FSDP":
            map_fsdp(r, "distributed_type", "full_shard", "fsdp_config")
        else:
            _deepspeed(r, path)
    _precision(r)
    r.ignore(*NO_EFFECT, "fsdp_config", "deepspeed_config")
    return r.finish(KEY, str(path))


def _from_plan(r: Reader, plan: dict, path: Path) -> None:
    label = f"{HEADER.strip()} in {path}"
    try:
        run = run_from_plan({"config": plan["config"]}, label)
    except (ConfigError, KeyError) as exc:
        r.errors.append(str(exc))
        return
    config = plan["config"]
    key = "# vramplan-plan"
    if plan.get("model"):
        r.set("model", str(plan["model"]), f"{key} model")
    adapter, quantized = method_parts(run.method)
    r.set("adapter", adapter, f"{key} config.method")
    r.set("quantized", quantized, f"{key} config.method")
    for name in ("rank", "alpha", "dropout", "targets", "batch", "seq_len", "grad_ckpt", "optimizer", "precision",
                 "attention", "double_quant", "adapter_dtype", "loss", "loss_chunk", "offload_activations", "packing"):
        r.set(name, getattr(run, name), f"{key} config.{name}")
    r.set("grad_accum", int(config.get("grad_accum") or 1), f"{key} config.grad_accum")
    if config.get("use_rslora") is not None:
        r.set("use_rslora", bool(config["use_rslora"]), f"{key} config.use_rslora")


def _deepspeed(r: Reader, path: Path) -> None:
    ds = r.get("deepspeed_config", {}) or {}
    if ds.get("deepspeed_config_file"):
        map_deepspeed(r, "deepspeed_config.deepspeed_config_file", ds["deepspeed_config_file"], path.parent)
        return
    stage = int(ds.get("zero_stage", 2))
    inline = {"zero_optimization": {"stage": stage, "offload_optimizer": {"device": ds.get("offload_optimizer_device", "none")},
                                    "offload_param": {"device": ds.get("offload_param_device", "none")}}}
    map_deepspeed(r, "deepspeed_config.zero_stage", inline, None)


def _precision(r: Reader) -> None:
    mixed = str(r.get("mixed_precision", "no")).lower()
    if mixed not in ("no", "bf16", "fp16"):
        r.problem("precision", f"mixed_precision {mixed} is not modelled (no, bf16, fp16 are); pass --precision")
        return
    planned = r.settings.get("precision")
    if planned is not None and (planned.removesuffix("-mixed") == mixed or (mixed == "no" and planned == "fp32")):
        return  # the plan's weights dtype, consistent with this autocast
    # the autocast dtype only: the weights' dtype is the script's, so this gives way to any other file's precision
    r.set("precision", "fp32" if mixed == "no" else f"{mixed}-mixed", "mixed_precision", default=True)
    if planned is None:
        r.note(f"mixed_precision {mixed}: fp32 weights under autocast assumed unless another --from file or --precision says otherwise")


# ---------------------------------------------------------------- export
def write(plan: ExportPlan, base: dict | None = None) -> tuple[dict, list[str]]:
    """The accelerate config for `plan` (over `base`), and notes; the plan rides in `header(plan)`."""
    run, parallel = plan.run, plan.parallel
    half = run.precision.removesuffix("-mixed")
    doc = {key: value for key, value in (base or {}).items() if key not in ("distributed_type", "num_processes", "mixed_precision", "fsdp_config", "deepspeed_config")}
    doc = {"compute_environment": "LOCAL_MACHINE", "debug": False, **doc}
    doc["distributed_type"] = "NO" if parallel is None else "MULTI_GPU" if parallel.strategy == "ddp" else "FSDP" if parallel.strategy.startswith("fsdp") else "DEEPSPEED"
    if parallel is not None and parallel.strategy.startswith("fsdp"):
        doc["fsdp_config"] = {
            "fsdp_sharding_strategy": "SHARD_GRAD_OP" if parallel.strategy == "fsdp-grad-op" else "FULL_SHARD",
            "fsdp_offload_params": parallel.offload != "none", "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_backward_prefetch": "BACKWARD_PRE", "fsdp_state_dict_type": "SHARDED_STATE_DICT", "fsdp_use_orig_params": True,
            "fsdp_sync_module_states": True, "fsdp_cpu_ram_efficient_loading": True, "fsdp_activation_checkpointing": False,
            "fsdp_version": 1,
        }
    elif parallel is not None and parallel.strategy.startswith("zero"):
        doc["deepspeed_config"] = {
            "zero_stage": int(parallel.strategy.removeprefix("zero")), "gradient_accumulation_steps": plan.grad_accum,
            "gradient_clipping": 1.0, "offload_optimizer_device": "cpu" if parallel.offload != "none" else "none",
            "offload_param_device": "cpu" if parallel.offload == "params" else "none", "zero3_init_flag": parallel.strategy == "zero3",
        }
    doc.update(machine_rank=0, main_training_function="main", mixed_precision="no" if half == "fp32" else half, num_machines=1,
               num_processes=plan.gpus, rdzv_backend="static", same_network=True, tpu_env=[], tpu_use_cluster=False,
               tpu_use_sudo=False, use_cpu=False)
    notes = ["the model, method, batch and sequence length are your script's: the # vramplan-plan line records the plan's",
             "launch: accelerate launch --config_file FILE your_training_script.py"]
    return doc, notes


def header(plan_document: dict) -> str:
    """The comment line that carries the plan (accelerate ignores comments)."""
    keep = {key: plan_document[key] for key in ("model", "gpu", "config") if key in plan_document}
    return HEADER + json.dumps(keep, separators=(",", ":"))
