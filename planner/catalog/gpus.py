"""Built-in GPU presets.

`total_bytes` is the total device memory as the CUDA driver reports it: `cudaMemGetInfo`'s
total, the same number as `torch.cuda.get_device_properties(i).total_memory` and deviceQuery's
"Total amount of global memory". That is less than the marketing size: the driver keeps some for
itself, and ECC uses some more where it is on. It also moves by a few hundred MiB between driver
versions (a T4 shows 15,842,934,784 bytes on old drivers and 15,655,829,504 on CUDA 12 ones). So
each value below is one that was publicly reported from a real card, from a CUDA 12 driver where
one could be found. The comment on each entry says where it came from. Where a card type has
more than one variant (SXM or PCIe, with or without ECC), the comment gives the others.

`bandwidth_gbps` is the vendor's published memory bandwidth in GB/s. `bf16_tflops` is the
published dense (no sparsity) tensor-core throughput with FP32 accumulation, the way training
runs: BF16, or FP16 on cards that have no BF16 (T4, V100).

The plain names "a100" and "v100" are left out as aliases on purpose. Each of them could mean
either of two memory sizes.
"""

from __future__ import annotations

GPU_PRESETS: dict[str, dict] = {
    "t4": {
        "name": "NVIDIA Tesla T4",
        # deviceQuery, CUDA 12.2 driver: "14931 MBytes (15655829504 bytes)"; same figure in several
        # public T4 logs (Yandex Cloud, torch total_memory=14930MB). Pre-CUDA-12 drivers: 15109 MiB.
        "total_bytes": 15_655_829_504,
        "bf16": False,
        "bandwidth_gbps": 320.0,
        "bf16_tflops": 65.0,  # FP16 tensor (no BF16 on Turing)
        "aliases": ("tesla-t4", "nvidia-t4"),
    },
    "v100-16gb": {
        "name": "NVIDIA Tesla V100 16GB",
        # torch total_memory=16160MB for Tesla V100-SXM2-16GB (many public logs); 16,944,988,160 bytes
        # in Alibaba's GPU-cluster simulator table. Both are pre-CUDA-12 drivers; none newer found.
        "total_bytes": 16_944_988_160,
        "bf16": False,
        "bandwidth_gbps": 900.0,
        "bf16_tflops": 125.0,  # FP16 tensor, SXM2 (PCIe: 112)
        "aliases": ("v100-16", "tesla-v100-16gb", "v100-sxm2-16gb"),
    },
    "v100-32gb": {
        "name": "NVIDIA Tesla V100 32GB",
        # deviceQuery (drivers 10.2 to 11.4, several repos): "32510 MBytes (34089730048 bytes)".
        "total_bytes": 34_089_730_048,
        "bf16": False,
        "bandwidth_gbps": 900.0,
        "bf16_tflops": 125.0,  # FP16 tensor, SXM2
        "aliases": ("v100-32", "tesla-v100-32gb", "v100-sxm2-32gb"),
    },
    "a10g": {
        "name": "NVIDIA A10G",
        # deviceQuery, CUDA 12.9 driver (tensara/tensara src/constants/deviceQuery.ts): 23696375808.
        # The A10 (not G) reports about 23,835,181,056.
        "total_bytes": 23_696_375_808,
        "bf16": True,
        "bandwidth_gbps": 600.0,
        "bf16_tflops": 70.0,  # AWS's A10G variant; the A10 datasheet says 125
        "aliases": ("a10", "nvidia-a10g"),
    },
    "l4": {
        "name": "NVIDIA L4",
        # deviceQuery, CUDA 12.0 driver: "22518 MBytes (23612293120 bytes)". A CUDA 12.9 driver
        # reports 23,670,685,696 (tensara); the lower figure is kept.
        "total_bytes": 23_612_293_120,
        "bf16": True,
        "bandwidth_gbps": 300.0,
        "bf16_tflops": 121.0,  # datasheet: 242 with sparsity
        "aliases": ("nvidia-l4",),
    },
    "rtx3090": {
        "name": "NVIDIA GeForce RTX 3090",
        # deviceQuery, CUDA 12.1 and 12.2 drivers (two repos): "24238 MBytes (25414860800 bytes)".
        # CUDA 11.8 drivers: 25,447,170,048. A desktop that drives a display has less free.
        "total_bytes": 25_414_860_800,
        "bf16": True,
        "bandwidth_gbps": 936.0,
        "bf16_tflops": 71.0,  # FP32 accumulate (142 with FP16 accumulate)
        "aliases": ("3090", "rtx-3090", "geforce-rtx-3090"),
    },
    "rtx4090": {
        "name": "NVIDIA GeForce RTX 4090",
        # deviceQuery, Linux, CUDA 12.1 driver: "24564 MBytes (25756696576 bytes)"; torch logs show
        # total_memory=24563MB. Windows/WDDM reports about 23028 MiB.
        "total_bytes": 25_756_696_576,
        "bf16": True,
        "bandwidth_gbps": 1008.0,
        "bf16_tflops": 165.2,  # FP32 accumulate (330 with FP16 accumulate)
        "aliases": ("4090", "rtx-4090", "geforce-rtx-4090"),
    },
    "l40s": {
        "name": "NVIDIA L40S",
        # cuda-device-query README, CUDA 12.4 driver: "45373 MBytes (47576711168 bytes)". A CUDA
        # 12.9 driver reports 47,677,177,856 (tensara); the lower figure is kept. The L40 has the same
        # 48 GB.
        "total_bytes": 47_576_711_168,
        "bf16": True,
        "bandwidth_gbps": 864.0,
        "bf16_tflops": 362.0,  # datasheet 362.05 (733 with sparsity)
        "aliases": ("l40", "nvidia-l40s"),
    },
    "a100-40gb": {
        "name": "NVIDIA A100 40GB",
        # deviceQuery, A100-PCIE-40GB, CUDA 12.2 driver: "40339 MBytes (42298834944 bytes)"; this
        # matches torch's common "total capacity of 39.39 GiB". Older drivers: 42,505,273,344.
        "total_bytes": 42_298_834_944,
        "bf16": True,
        "bandwidth_gbps": 1555.0,
        "bf16_tflops": 312.0,
        "aliases": ("a100-40", "a100-sxm4-40gb", "a100-pcie-40gb"),
    },
    "a100-80gb": {
        "name": "NVIDIA A100 80GB",
        # Public deviceQuery: SXM on a CUDA 12.9 driver gives 85,095,874,560 (tensara, used here);
        # PCIe on a CUDA 12.2 driver gives 84,987,740,160 (79.15 GiB); SXM4 on older drivers 85,198,045,184.
        "total_bytes": 85_095_874_560,
        "bf16": True,
        "bandwidth_gbps": 2039.0,  # SXM (PCIe: 1935)
        "bf16_tflops": 312.0,
        "aliases": ("a100-80", "a100-sxm4-80gb", "a100-80gb-pcie"),
    },
    "h100": {
        "name": "NVIDIA H100 80GB HBM3 (SXM)",
        # deviceQuery, CUDA 12.9 driver (tensara): 85029158912. The same figure is the H800 SXM
        # mem_capacity in NVIDIA/aiconfigurator. torch shows it as "total capacity of 79.19 GiB".
        "total_bytes": 85_029_158_912,
        "bf16": True,
        "bandwidth_gbps": 3350.0,
        "bf16_tflops": 989.0,
        "aliases": ("h100-80gb", "h100-sxm", "h100-sxm5", "h100-80gb-hbm3"),
    },
    "h200": {
        "name": "NVIDIA H200 141GB",
        # torch total_memory=143156MB (public log), i.e. "total capacity of 139.80 GiB" in many OOM
        # reports. The exact byte count was not found; this is 143156 MiB, rounded down to a MiB.
        "total_bytes": 150_110_060_544,
        "bf16": True,
        "bandwidth_gbps": 4800.0,
        "bf16_tflops": 989.0,
        "aliases": ("h200-141gb", "h200-sxm"),
    },
}
