"""Learn from the runs people do anyway: a `transformers.TrainerCallback` for any HF `Trainer`
or TRL trainer that records the run's memory-relevant config and measured peak memory in the
vramplan store, beside the estimate made for that config before the measured step ran.

    from vramplan.integrations import VramplanCallback
    trainer = SFTTrainer(..., callbacks=[VramplanCallback()])

What it measures, on the first two optimizer steps only (step 1 allocates the optimizer states,
step 2 is the steady state the planner predicts), then it unhooks itself:

* CUDA: `torch.cuda.max_memory_allocated` per phase (forward, backward, optimizer), reset at
  each phase boundary, `max_memory_reserved`, and NVML's used memory for the process.
* CPU: the live-tensor tracker (`calibrate.cpu_tracker`), the analogue of max_memory_allocated.

The estimate is made when a measured step's first batch reaches the model (its real batch and
sequence length, or `seq_len=` when given). Anything that goes wrong inside the callback is a
warning and the run goes on unrecorded; it never raises into the training loop. On CPU the
tracker is a dispatch mode held from the step's start to its end: if training itself raises in
those two steps, call `callback.close()` (the next `train()` does it too).
"""

from __future__ import annotations

import functools
import shlex
import sys
import time
import warnings
from dataclasses import asdict

from transformers import TrainerCallback

MEASURED_STEPS = 2
PHASES = ("forward", "backward", "optimizer")
KIND = "hf trainer callback"


def _guarded(hook):
    """Run a callback method; on any failure warn once, stop measuring, and let training go on."""
    @functools.wraps(hook)
    def wrapper(self, *args, **kwargs):
        if self._disabled:
            return None
        try:
            hook(self, *args, **kwargs)
        except Exception as exc:  # never break the user's run
            self._fail(f"{hook.__name__}: {type(exc).__name__}: {exc}")
        return None  # the Trainer keeps its own control object
    return wrapper


class VramplanCallback(TrainerCallback):
    """Record this run's peak memory beside vramplan's estimate, in the measurement store.

    Args:
        db: the store [default: the user data directory, e.g. ~/.local/share/vramplan/measurements.db].
        seq_len: tokens per example for the estimate [default: each measured batch's length].
        model_name: the run's model name in the store [default: the model's `_name_or_path`].
        record: write to the store (False: measure and keep the result on `callback.result` only).

    After the measured steps, `callback.result` holds the estimate and the measurement and
    `callback.record_id` the store row (None until then, or when something failed: see warnings).
    """

    def __init__(self, db=None, seq_len: int | None = None, model_name: str | None = None, record: bool = True):
        self.db, self.seq_len, self.model_name, self.record = db, seq_len, model_name, record
        self.result: dict | None = None
        self.record_id: int | None = None
        self._disabled = False
        self._reset()

    # ------------------------------------------------------------ state
    def _reset(self) -> None:
        self._hooks, self._steps, self._in_step = [], 0, False
        self._tracker = self._phase_cm = None
        self._phase = None
        self._estimates: list = []  # (step, run, breakdown) made before each measured step
        self._cuda_phases: list[dict] = []
        self._reserved = self._device_used = 0
        self._shapes: list[tuple[int, int]] = []
        self._notes: list[str] = []
        self._model = self._optimizer = self._args = None
        self._named_config, self._model_spec, self._seq_len = ("", {}), None, None
        self._device = "cpu"
        self._t0 = time.perf_counter()

    def _fail(self, why: str) -> None:
        self.close()
        self._disabled = True
        warnings.warn(f"vramplan: {why}; training goes on, this run is not recorded", RuntimeWarning, stacklevel=3)

    def close(self) -> None:
        """Leave the CPU tracker and remove the hooks (safe to call any time)."""
        if self._phase_cm is not None:
            cm, self._phase_cm = self._phase_cm, None
            try:
                cm.__exit__(None, None, None)
            except Exception:  # closing is best effort
                pass
        if self._tracker is not None:
            try:
                if self._in_step:
                    self._tracker.__exit__(None, None, None)
                self._tracker.remove_grad_hooks()  # the grads' labelling hooks would run on every later step
            except Exception:
                pass
            self._tracker = None
        self._in_step = False
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    @property
    def measuring(self) -> bool:
        return not self._disabled and self._model is not None and self._steps < MEASURED_STEPS

    # ------------------------------------------------------------ Trainer events
    @_guarded
    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        import torch

        self.close()
        self._reset()
        if not state.is_world_process_zero:
            self._model = None  # one record per run: rank 0's
            return
        self._model, self._optimizer, self._args = model, optimizer, args
        parameter = next(model.parameters())
        self._device = parameter.device.type if parameter.device.type in ("cuda", "cpu") else "cpu"
        # TRL's SFTConfig pads and truncates to max_length: the estimate uses it; plain Trainer: the batches decide
        self._seq_len = self.seq_len or getattr(args, "max_length", None) or getattr(args, "max_seq_length", None)
        self._named_config = self._read_config(model)
        self._model_spec = self._spec()  # before any tracking: an inventoried model is built on the meta device
        if self._device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        self._hooks = [model.register_forward_pre_hook(self._before_forward, with_kwargs=True),
                       model.register_forward_hook(self._after_forward, always_call=True)]

    @_guarded
    def on_step_begin(self, args, state, control, **kwargs):
        if not self.measuring:
            return
        self._in_step = True
        self._cuda_phases.append(dict.fromkeys(PHASES, 0))
        self._shapes.append((0, 0))
        if self._device == "cpu":
            from .calibrate.cpu_tracker import LiveTensorTracker

            if self._tracker is None:
                self._tracker = LiveTensorTracker()  # exact kernels: the user's numerics stay as they are
            self._tracker.__enter__()
            if self._steps == 0:  # storages made before tracking began: label them once
                self._tracker.track_module(self._model)
                self._tracker.track_optimizer(getattr(self._optimizer, "optimizer", self._optimizer))
            self._tracker.step = self._steps

    def _before_forward(self, module, args, kwargs):
        if not (self._in_step and self.measuring):
            return None
        try:
            self._switch("forward")
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is not None and getattr(ids, "dim", lambda: 0)() == 2:
                self._shape(int(ids.shape[0]), int(ids.shape[1]))
            if self._tracker is not None:
                for value in (*args, *kwargs.values()):
                    if hasattr(value, "untyped_storage"):
                        self._tracker.track_tensor(value, "inputs")  # the collator made them before the step began
        except Exception as exc:
            self._fail(f"forward hook: {type(exc).__name__}: {exc}")
        return None

    def _after_forward(self, module, args, output):
        if self._in_step and self.measuring:
            try:
                self._switch("backward")
            except Exception as exc:
                self._fail(f"forward hook: {type(exc).__name__}: {exc}")
        return None

    @_guarded
    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self._in_step and self.measuring:
            self._switch("optimizer")

    @_guarded
    def on_step_end(self, args, state, control, **kwargs):
        if not (self._in_step and self.measuring):
            return
        self._switch(None)
        if self._tracker is not None:
            self._tracker.__exit__(None, None, None)
        else:
            self._cuda_step_end()
        self._in_step = False
        self._steps += 1
        if self._steps == MEASURED_STEPS:
            self._finish()

    @_guarded
    def on_train_end(self, args, state, control, **kwargs):
        if self._model is not None and self.result is None and self._steps > 0:
            self._finish()  # a run shorter than the measured steps: record what there is
        self.close()

    # ------------------------------------------------------------ measuring
    def _switch(self, phase: str | None) -> None:
        if phase == self._phase:
            return
        if self._tracker is not None:
            if self._phase_cm is not None:
                cm, self._phase_cm = self._phase_cm, None
                cm.__exit__(None, None, None)
            if phase is not None:
                self._phase_cm = self._tracker.phase(phase)
                self._phase_cm.__enter__()
        elif self._device == "cuda":
            import torch

            if self._phase is not None:  # the phase that just ended: its peak since the last reset
                current = self._cuda_phases[-1]
                current[self._phase] = max(current[self._phase], int(torch.cuda.max_memory_allocated()))
                self._reserved = max(self._reserved, int(torch.cuda.max_memory_reserved())) if self._steps else self._reserved
            torch.cuda.reset_peak_memory_stats()
        self._phase = phase

    def _cuda_step_end(self) -> None:
        from .calibrate.cuda_probe import nvml_process_used_bytes

        used = nvml_process_used_bytes()
        if used is not None and self._steps >= 1:
            self._device_used = max(self._device_used, used)

    def _shape(self, batch: int, seq: int) -> None:
        """The largest batch and sequence of this step; (re-)estimate before it runs when they grow."""
        old_b, old_s = self._shapes[-1]
        shape = (max(old_b, batch), max(old_s, seq))
        self._shapes[-1] = shape
        if shape != (old_b, old_s):
            self._estimate(*shape)

    def _estimate(self, batch: int, seq: int) -> None:
        from .calibrate.hf_run import run_from_model
        from .planner.estimator import estimate

        run, notes = run_from_model(self._model, self._args, self._optimizer, batch, self._seq_len or seq, self._device)
        self._notes += [note for note in notes if note not in self._notes]
        self._estimates.append((self._steps, run, estimate(self._model_spec, run, self._gpu()).breakdown))

    def _read_config(self, model) -> tuple[str, dict]:
        from .calibrate.hf_run import model_config

        name, config = model_config(model)
        return (self.model_name or name), config

    def _spec(self):
        from .planner.architectures import spec_from_config
        from .planner.families import FAMILIES
        from .planner.inventory import spec_from_meta_model

        name, config = self._named_config
        if config.get("model_type") in FAMILIES:
            return spec_from_config(config, name, source="trainer callback")
        return spec_from_meta_model(config, name)

    def _gpu(self):
        if self._device != "cuda":
            return None
        from .calibrate.trainer.model_dir import capacity_gpu

        return capacity_gpu(None, "cuda")

    # ------------------------------------------------------------ the record
    def _measured(self) -> dict:
        steady = self._steps - 1  # step 2 when there was one
        if self._tracker is not None:
            record = self._tracker.peak_record(names=PHASES, steps={steady})
            phases = {k: v for k, v in self._tracker.phase_peaks(steps={steady}).items() if k in PHASES}
            return {"statistic": f"peak live tensor storage bytes (LiveTensorTracker), step {steady + 1} of a HF Trainer run",
                    "peak_allocated_bytes": record.peak_bytes if record else None, "phases": phases,
                    "categories": dict(record.breakdown) if record else {}, "first_step_peak_bytes": self._tracker.peak_bytes}
        phases = self._cuda_phases[steady]
        return {"statistic": f"torch.cuda.max_memory_allocated per phase, step {steady + 1} of a HF Trainer run",
                "peak_allocated_bytes": max(phases.values()) or None, "peak_reserved_bytes": self._reserved or None,
                "device_used_bytes": self._device_used or None, "phases": phases, "categories": {},
                "first_step_peak_bytes": max(self._cuda_phases[0].values())}

    def _finish(self) -> None:
        from .calibrate.environment import environment
        from .calibrate.store import RunRecord, Store

        steady = self._steps - 1
        made = [e for e in self._estimates if e[0] <= steady]
        if not made:
            raise RuntimeError("no batch reached the model during the measured steps")
        _, run, breakdown = made[-1]  # the estimate made before the measured step, for its shape
        measured = self._measured()
        name, config = self._named_config
        env = environment(self._device)
        args = self._args
        trainer = {
            "kind": KIND, "steps_measured": self._steps, "steady_step": steady + 1, "shapes": [list(s) for s in self._shapes],
            "grad_accum": int(getattr(args, "gradient_accumulation_steps", 1)), "optim": str(getattr(args, "optim", "")),
            "statistic": measured["statistic"], "first_step_peak_bytes": measured.get("first_step_peak_bytes"),
            "estimated_before_step": made[-1][0] + 1, "notes": self._notes,
        }
        record = RunRecord(
            source=self._device, outcome="ok", model_name=name, model_config=config, run_config=asdict(run),
            device_name=env["device_name"], device_total_bytes=env.get("device_total_bytes"), stack=env["stack"],
            environment={**env, "trainer": trainer},
            estimate={"terms": breakdown.by_name(), "at_peak": breakdown.at_peak(), "peak_phase": breakdown.peak_phase},
            est_peak_allocated_bytes=breakdown.peak_allocated_bytes, est_peak_reserved_bytes=breakdown.peak_reserved_bytes,
            est_device_used_bytes=breakdown.device_used_bytes, peak_allocated_bytes=measured.get("peak_allocated_bytes"),
            peak_reserved_bytes=measured.get("peak_reserved_bytes"), device_used_bytes=measured.get("device_used_bytes"),
            phases=measured.get("phases", {}), categories=measured.get("categories", {}),
            command=" ".join(shlex.quote(a) for a in sys.argv), duration_s=time.perf_counter() - self._t0,
        )
        self.result = {"run": run, "estimate": breakdown, "record": record}
        self.close()
        if self.record:
            with Store.open(self.db) as store:
                self.record_id = store.add_run(record)
        self._model = None  # measured: every later event returns at once


__all__ = ["VramplanCallback"]
