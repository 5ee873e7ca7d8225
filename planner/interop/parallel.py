"""FSDP and DeepSpeed settings as the tools write them, read into `strategy` / `offload`."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .common import Reader

# torch FSDP sharding strategies (names, and the ints accelerate also accepts) -> vramplan --strategy
FSDP_SHARDING = {"full_shard": "fsdp", "shard_grad_op": "fsdp-grad-op", "no_shard": "ddp", "hybrid_shard": "fsdp",
                 "hybrid_shard_zero2": "fsdp-grad-op", "1": "fsdp", "2": "fsdp-grad-op", "3": "ddp", "4": "fsdp", "5": "fsdp-grad-op"}


def _options(value) -> list[str]:
    if isinstance(value, bool):
        return ["full_shard"] if value else []
    if isinstance(value, str):
        return [part for part in re.split(r"[\s,]+", value.strip().lower()) if part]
    if isinstance(value, (list, tuple)):
        return [str(part).strip().lower() for part in value if str(part).strip()]
    return []


def map_fsdp(reader: Reader, key: str, value, config_key: str | None) -> None:
    """`fsdp: "full_shard auto_wrap offload"` (TrainingArguments) or a list of the same words
    (axolotl), with its `fsdp_config` (`offload_params` / `fsdp_offload_params`,
    `sharding_strategy`, FSDP2's `reshard_after_forward`, `activation_checkpointing`)."""
    options = _options(value)
    config = reader.get(config_key, {}) if config_key else {}
    if not options and not (isinstance(config, dict) and config and reader.peek("fsdp_version")):
        return
    strategy = next((FSDP_SHARDING[o] for o in options if o in FSDP_SHARDING), "fsdp")
    offload = "offload" in options
    if isinstance(config, dict):
        for name, setting in config.items():
            plain = str(name).removeprefix("fsdp_")
            if plain == "offload_params":
                offload = offload or reader.as_bool(f"{config_key}.{name}", setting, False)
            elif plain == "sharding_strategy":
                strategy = FSDP_SHARDING.get(str(setting).strip().lower(), strategy)
            elif plain == "reshard_after_forward" and reader.as_bool(f"{config_key}.{name}", setting, True) is False:
                strategy = "fsdp-grad-op"  # FSDP2: parameters stay gathered from forward to backward
            elif plain == "activation_checkpointing" and reader.as_bool(f"{config_key}.{name}", setting, False):
                reader.set("grad_ckpt", True, f"{config_key}.{name}")
    reader.set("strategy", strategy, key)
    reader.set("offload", "params" if offload and strategy != "ddp" else "none", key)


def map_deepspeed(reader: Reader, key: str, value, base_dir: Path | None) -> None:
    """A DeepSpeed config (inline, or a JSON file read when found), else the stage in its file
    name, as axolotl (`deepspeed_configs/zero3_bf16.json`) and LLaMA-Factory
    (`examples/deepspeed/ds_z3_offload_config.json`) name theirs."""
    config = value if isinstance(value, dict) else None
    if config is None and isinstance(value, str):
        for candidate in ([base_dir / value] if base_dir is not None else []) + [Path(value).expanduser()]:
            if candidate.is_file():
                try:
                    config = json.loads(candidate.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    config = None
                break
    if isinstance(config, dict):
        zero = config.get("zero_optimization") or {}
        stage = int(zero.get("stage", 0) or 0)
        params_off = str((zero.get("offload_param") or {}).get("device", "none")).lower() in ("cpu", "nvme")
        optim_off = str((zero.get("offload_optimizer") or {}).get("device", "none")).lower() in ("cpu", "nvme")
    else:
        name = Path(str(value)).name.lower()
        stage = next((n for n in (3, 2, 1, 0) if f"zero{n}" in name or f"z{n}" in name), None)
        if stage is None:
            reader.problem("strategy", f"{key} {value!r} is not here and its name holds no ZeRO stage; pass --strategy zero1|zero2|zero3")
            return
        params_off = "offload_param" in name or "offload_all" in name or (stage == 3 and "offload" in name and "optim" not in name)
        optim_off = "offload" in name
        reader.note(f"{key} {value}: not found, so the ZeRO stage ({stage}) and offload come from its name")
    if stage == 0:
        reader.set("strategy", "ddp", key)
        reader.set("offload", "none", key)
        return
    reader.set("strategy", f"zero{stage}", key)
    reader.set("offload", "params" if params_off and stage == 3 else "optimizer" if (optim_off or params_off) else "none", key)


def deepspeed_document(strategy: str, offload: str, grad_accum: int | str = "auto") -> dict:
    """A DeepSpeed config for a ZeRO stage (the values transformers fills stay "auto")."""
    stage = int(strategy.removeprefix("zero"))
    zero: dict = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if offload in ("optimizer", "params"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if offload == "params":
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {"zero_optimization": zero, "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
            "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": grad_accum, "gradient_clipping": "auto"}
