"""The design notes' per-GPU presets for 8B against the advisor, both through the estimator.

Prints a Markdown table for the README: does the preset fit, and what the advisor picks instead.
"""

from __future__ import annotations

from vramplan.planner.advisor import recommend
from vramplan.planner.catalog import catalog_spec, resolve_gpu
from vramplan.planner.estimator import estimate
from vramplan.planner.specs import RunConfig

SEQ_LEN = 2048
PRESETS = {  # ../shared/seeds/training-methods-memory.md
    "t4": dict(method="qlora", rank=8, alpha=16, batch=1, targets=("attention",)),
    "l4": dict(method="qlora", rank=16, alpha=32, batch=2, targets=("attention",)),
    "a100-40gb": dict(method="lora", rank=32, alpha=64, batch=4, targets=("all-linear",)),
    "h100": dict(method="lora", rank=64, alpha=128, batch=8, targets=("all-linear",)),
}


def main() -> None:
    model = catalog_spec("meta-llama/Meta-Llama-3-8B")
    print("| GPU | seed preset | preset device used | advisor (goal quality) | advisor device used |")
    print("|---|---|---|---|---|")
    for key, preset in PRESETS.items():
        gpu = resolve_gpu(key)
        precision = "bf16" if gpu.bf16 else "fp16"
        run = RunConfig(seq_len=SEQ_LEN, precision=precision, grad_ckpt=True, **preset)
        used = estimate(model, run, gpu).breakdown.device_used_bytes
        fits = "fits" if used <= gpu.total_bytes else "**does not fit**"
        best = recommend(model, gpu, SEQ_LEN)[0]
        b = best.run
        pick = f"{b.method} r={b.rank} {','.join(b.targets)}, {b.batch}×{best.grad_accum}, ckpt {'on' if b.grad_ckpt else 'off'}, {b.optimizer}"
        print(
            f"| {key} ({gpu.total_bytes / 2**30:.1f} GiB) | {preset['method']} r={preset['rank']} {','.join(preset['targets'])}, batch {preset['batch']}, ckpt on "
            f"| {used / 2**30:.2f} GiB, {fits} | {pick} | {best.estimate.breakdown.device_used_bytes / 2**30:.2f} GiB |"
        )


if __name__ == "__main__":
    main()
