"""`vramplan run --gpus N --strategy ddp|fsdp`: one training process per device, through Accelerate.

The `run` command writes ``OUT/accelerate_config.yaml`` and ``OUT/launch.json`` (the
`TrainConfig`), then runs ``accelerate launch --config_file OUT/accelerate_config.yaml -m
vramplan.calibrate.trainer.distributed OUT/launch.json``. Each rank (`main`) makes an
``accelerate.Accelerator`` and calls the ordinary `train` with it: the loop wraps the model and
optimizer with ``accelerator.prepare``, trains on its shard of the rows, measures its own peak, and
rank 0 gathers every rank's peak and writes the one store record, checkpoints and weights.

On CPU the ranks talk over gloo on the loopback interface (``MULTI_CPU``; FSDP is CUDA only).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path

from vramplan.planner.errors import ConfigError, VramplanError

CONFIG_FILE = "accelerate_config.yaml"
LAUNCH_FILE = "launch.json"
LAUNCH_FILES = (CONFIG_FILE, LAUNCH_FILE)  # what the launcher leaves in OUT before the run claims it
STRATEGIES = ("ddp", "fsdp")
NOT_SERIALIZED = ("log", "step_callback", "accelerator")


def check_launch(gpus: int, strategy: str | None, device: str, resume: bool, auto_fallback: bool) -> None:
    """Refuse what the multi-process run does not do (one line each)."""
    if gpus < 1:
        raise ConfigError(f"--gpus must be 1 or more, got {gpus}")
    if gpus == 1:
        if strategy is not None:
            raise ConfigError("--strategy needs --gpus 2 or more")
        return
    if strategy is None:
        raise ConfigError("--gpus above 1 needs --strategy: ddp or fsdp")
    if strategy == "fsdp" and device != "cuda":
        raise ConfigError("--strategy fsdp needs CUDA devices (FSDP does not run on the CPU gloo backend); use --strategy ddp on CPU")
    if resume or auto_fallback:
        raise ConfigError(f"--{'resume' if resume else 'auto-fallback'} is not supported with --gpus above 1 yet")
    if device == "cuda":
        import torch

        if torch.cuda.device_count() < gpus:
            raise ConfigError(f"--gpus {gpus}: only {torch.cuda.device_count()} CUDA devices are visible")


def accelerate_config(gpus: int, strategy: str, device: str) -> dict:
    config = {
        "compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU" if device == "cuda" else "MULTI_CPU",
        "num_processes": gpus, "num_machines": 1, "machine_rank": 0, "mixed_precision": "no",
        "use_cpu": device != "cuda", "main_process_ip": "127.0.0.1",
    }
    if strategy == "fsdp":
        config["distributed_type"] = "FSDP"  # what makes accelerate wrap the model with FSDP
        config["fsdp_config"] = {
            "fsdp_sharding_strategy": "FULL_SHARD", "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_use_orig_params": True, "fsdp_state_dict_type": "FULL_STATE_DICT", "fsdp_offload_params": False,
            "fsdp_sync_module_states": True, "fsdp_backward_prefetch": "BACKWARD_PRE",
        }
    return config


def write_launch_files(config, gpus: int, strategy: str, device: str) -> tuple[Path, Path]:
    """OUT/accelerate_config.yaml and OUT/launch.json (the TrainConfig each rank rebuilds)."""
    import yaml

    from .checkpoint import claim_out_dir

    out = Path(config.out_dir)
    claim_out_dir(out, False)  # refuse a used OUT before writing into it
    config_path = out / CONFIG_FILE
    config_path.write_text(yaml.safe_dump(accelerate_config(gpus, strategy, device), sort_keys=False))
    values = {f.name: getattr(config, f.name) for f in fields(config) if f.name not in NOT_SERIALIZED}
    values["run"] = asdict(config.run)
    values["gpu"] = asdict(config.gpu) if config.gpu is not None else None
    values["device"] = device
    values.update({k: str(values[k]) if values[k] is not None else None for k in ("model_path", "data_path", "out_dir", "db")})
    launch_path = out / LAUNCH_FILE
    launch_path.write_text(json.dumps({"strategy": strategy, "gpus": gpus, "config": values}, indent=1))
    return config_path, launch_path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_per_gpu_fit(config, gpus: int, strategy: str):
    """Refuse before launching when one GPU's share does not fit (the ranks then skip their single-GPU check).

    Raises:
        ConfigError: the per-GPU estimate exceeds the GPU, without --force.
    """
    if config.gpu is None or config.force:
        return config
    from vramplan.planner.inventory import spec_from_path
    from vramplan.planner.limits import estimate_per_gpu
    from vramplan.planner.sharding import ParallelPlan
    from vramplan.planner.units import format_gib

    spec, _ = spec_from_path(Path(config.model_path))
    per_gpu, _ = estimate_per_gpu(spec, config.run, config.gpu, None, ParallelPlan(strategy, gpus))
    needed = per_gpu.breakdown.device_used_bytes
    if needed > config.gpu.total_bytes:
        raise ConfigError(
            f"estimated {format_gib(needed)} per GPU with {strategy} on {gpus} x {config.gpu.name} does not fit "
            f"{format_gib(config.gpu.total_bytes)}: try more GPUs, --strategy fsdp, qlora, or --force to start anyway"
        )
    return replace(config, force=True)  # checked per GPU here; each rank would check a whole single GPU


def launch(config, gpus: int, strategy: str, device: str) -> int:
    """Write the launch files and run `accelerate launch`; returns its exit status."""
    import os

    config = check_per_gpu_fit(config, gpus, strategy)
    config_path, launch_path = write_launch_files(config, gpus, strategy, device)
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    command = [accelerate] if accelerate else [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate:
        command.append("launch")
    port = _free_port()
    command += ["--config_file", str(config_path), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)]
    if device != "cuda":
        # MULTI_CPU on one machine: accelerate's own launcher needs MPI; --multi_gpu selects torchrun,
        # whose ranks Accelerate then sets up as MULTI_CPU over gloo
        command += ["--multi_gpu", "--num_cpu_threads_per_process", "1"]
    command += ["-m", __name__, str(launch_path)]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    return subprocess.run(command, env=env, check=False).returncode


def _config_from(values: dict):
    from vramplan.planner.specs import GpuSpec, RunConfig

    from .loop import TrainConfig

    def tuples(d):
        return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

    values = dict(values, run=RunConfig(**tuples(values["run"])))
    if values.get("gpu") is not None:
        values["gpu"] = GpuSpec(**tuples(values["gpu"]))
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    """One rank: rebuild the TrainConfig, train with an Accelerator; rank 0 reports."""
    import click
    import torch
    from accelerate import Accelerator

    from .loop import train

    argv = sys.argv[1:] if argv is None else argv
    doc = json.loads(Path(argv[0]).read_text())
    config = _config_from(doc["config"])
    accelerator = Accelerator(cpu=config.device != "cuda")
    main_rank = accelerator.is_main_process
    config.accelerator = accelerator
    config.log = (lambda message: click.echo(message, err=True)) if main_rank else (lambda message: None)
    config.progress = config.progress and main_rank
    if config.device == "cpu":
        torch.set_num_threads(1)
    try:
        result = train(config)
    except VramplanError as exc:
        if main_rank:
            click.echo(f"Error: {exc}", err=True)
        return 1
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if main_rank:
        from vramplan.run_cmd import _summary

        _summary(result, config.db)
        peaks = ", ".join(str(p) for p in result.per_rank_peak_bytes or [])
        click.echo(f"{accelerator.num_processes} processes ({doc['strategy']}); per-rank peak bytes: {peaks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
