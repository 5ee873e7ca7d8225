"""How much `vramplan.integrations.VramplanCallback` slows a training run: the same tiny HF Trainer
run (probe-sized Llama + LoRA, CPU, one thread) with and without it, alternating, median of N.

The callback measures the first two optimizer steps and then unhooks itself, so it costs two
things: a one-time measurement (on CUDA a few allocator reads; on CPU the live-tensor tracker,
a dispatch mode that sees every op of those two steps) and nothing per step afterwards. Both are
printed, with the whole-run ratio for this run's length.

    python benchmarks/callback_overhead.py [--steps 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from vramplan.calibrate.probe_models import PROBE_MODELS
from vramplan.integrations import VramplanCallback

SEQ, BATCH = 128, 2
# CPU time of this process, not wall time: other work on shared cores does not count (one torch thread)
CLOCK = time.process_time


class Rows(torch.utils.data.Dataset):
    def __init__(self, n, vocab):
        self.ids = torch.randint(0, vocab, (n, SEQ), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (the same in both runs)."""

    def __init__(self):
        self.times, self._start = [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = CLOCK()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(CLOCK() - self._start)


def one_run(steps: int, with_callback: bool, db: Path) -> tuple[float, list[float]]:
    import peft

    config = AutoConfig.for_model(**PROBE_MODELS["probe-llama"])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    args = TrainingArguments(output_dir=str(db.parent / "out"), per_device_train_batch_size=BATCH, max_steps=steps,
                             optim="adamw_torch", use_cpu=True, report_to=[], save_strategy="no", logging_steps=10_000,
                             disable_tqdm=True, dataloader_num_workers=0)
    timer = StepTimer()
    callbacks = [timer] + ([VramplanCallback(db=db)] if with_callback else [])
    trainer = Trainer(model=model, args=args, train_dataset=Rows(64, config.vocab_size), callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # no metrics printed at the end
    start = CLOCK()
    trainer.train()
    return CLOCK() - start, timer.times


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=4)
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    totals = {True: [], False: []}
    steady = {True: [], False: []}
    measured = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        one_run(3, True, Path(tmp) / "warmup.db")  # imports and first-call costs out of the way
        for repeat in range(options.repeats):
            for with_callback in ((False, True) if repeat % 2 == 0 else (True, False)):
                total, times = one_run(options.steps, with_callback, Path(tmp) / f"store-{repeat}.db")
                totals[with_callback].append(total)
                measured[with_callback].append(sum(times[:2]))
                steady[with_callback].append(statistics.median(times[2:]))
    total_ratio = statistics.median(totals[True]) / statistics.median(totals[False])
    steady_ratio = statistics.median(steady[True]) / statistics.median(steady[False])
    one_time = statistics.median(measured[True]) - statistics.median(measured[False])
    step = statistics.median(steady[False])
    noise = (max(totals[False]) - min(totals[False])) / statistics.median(totals[False])
    print(f"VramplanCallback overhead, HF Trainer on CPU (probe-llama + LoRA r=8, batch {BATCH} x {SEQ}, 1 thread), "
          f"{options.steps} steps, median of {options.repeats}:")
    print(f"  whole run: {statistics.median(totals[True]):.2f} s with / {statistics.median(totals[False]):.2f} s without (CPU time) = ratio {total_ratio:.3f}")
    print(f"  per step after the two measured steps: ratio {steady_ratio:.3f} ({step * 1000:.1f} ms a step)")
    print(f"  one-time measurement (CPU tracker on steps 1-2): +{one_time:.2f} s = {one_time / step:.1f} steps' time; "
          f"under 1% of a run from {int(max(one_time, 0) / step / 0.01) + 1} steps on (on CUDA: allocator reads only)")
    print(f"  noise: the runs without the callback differ by {noise:.1%} among themselves (shared cores)")
    return {"total_ratio": total_ratio, "steady_ratio": steady_ratio, "one_time_s": one_time, "step_s": step, "noise": noise}


if __name__ == "__main__":
    main()
