"""Per-GPU plans for a 70B model on 2, 4 and 8 A100-80GB under each strategy (Markdown table)."""

from __future__ import annotations

from vramplan.planner.catalog import catalog_spec, resolve_gpu
from vramplan.planner.estimator import estimate
from vramplan.planner.sharding import STRATEGIES, ParallelPlan, shard
from vramplan.planner.specs import RunConfig

GPU_COUNTS = (2, 4, 8)


def main(model_id: str = "meta-llama/Meta-Llama-3-70B", gpu_key: str = "a100-80gb") -> None:
    model, gpu = catalog_spec(model_id), resolve_gpu(gpu_key)
    print(f"Per-GPU device used (GiB) for {model_id} on {gpu.name} ({gpu.total_bytes / 2**30:.1f} GiB), batch 1 x 2048, checkpointing on, AdamW, bf16")
    print()
    print("| method | strategy | " + " | ".join(f"{n} GPUs" for n in GPU_COUNTS) + " |")
    print("|---|---|" + "---|" * len(GPU_COUNTS))
    for method in ("full", "lora", "qlora"):
        single = estimate(model, RunConfig(method=method), gpu)
        print(f"| {method} | 1 GPU | {single.breakdown.device_used_bytes / 2**30:.1f} | | |")
        for strategy in STRATEGIES:
            cells = []
            for n in GPU_COUNTS:
                result = shard(single, ParallelPlan(strategy, n))
                mark = "fits" if result.fits else "no"
                cells.append(f"{result.breakdown.device_used_bytes / 2**30:.1f} ({mark})")
            print(f"| {method} | {strategy} | " + " | ".join(cells) + " |")
        offloaded = shard(single, ParallelPlan("zero3", 8, "optimizer"))
        print(f"| {method} | zero3 + optimizer offload | | | {offloaded.breakdown.device_used_bytes / 2**30:.1f} ({'fits' if offloaded.fits else 'no'}; host {offloaded.host_bytes / 2**30:.0f} GiB) |")


if __name__ == "__main__":
    main()
