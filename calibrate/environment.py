"""Where a measurement was taken: device, driver and library versions."""

from __future__ import annotations

import platform
from importlib import metadata

LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def stack_key(versions: dict[str, str]) -> str:
    """The software stack a calibration belongs to, e.g. 'torch=2.13.0 transformers=5.23.0 ...'."""
    return " ".join(f"{name}={versions[name]}" for name in LIBRARIES[:4])


def cuda_environment() -> dict:
    """Device name, total memory (driver's figure), driver and CUDA versions via torch and NVML."""
    import torch

    props = torch.cuda.get_device_properties(0)
    env = {
        "device_name": props.name,
        "device_total_bytes": int(props.total_memory),
        "cuda_runtime": torch.version.cuda,
        "capability": f"{props.major}.{props.minor}",
    }
    try:
        import pynvml

        pynvml.nvmlInit()
        env["driver"] = pynvml.nvmlSystemGetDriverVersion()
        pynvml.nvmlShutdown()
    except Exception as exc:  # NVML missing or not permitted: keep the run, say why
        env["driver"] = f"unknown ({type(exc).__name__})"
    return env


def cpu_environment() -> dict:
    import torch

    return {
        "device_name": "cpu",
        "device_total_bytes": None,
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }


def environment(device: str) -> dict:
    env = cuda_environment() if device == "cuda" else cpu_environment()
    versions = library_versions()
    env.update(python=platform.python_version(), platform=platform.platform(), libraries=versions, stack=stack_key(versions))
    return env
