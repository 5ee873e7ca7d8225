"""Exact live-tensor memory tracker (CPU, meta or fake tensors): the analogue of
``torch.cuda.max_memory_allocated`` without a GPU.

Every tensor an ATen op returns is seen by a ``TorchDispatchMode``; its *storage* is counted once
(views share their storage, so they add nothing) with ``storage.nbytes()`` bytes, and uncounted
when the storage is freed (a ``weakref`` callback on the ``UntypedStorage``). The running total is
therefore the bytes of live tensor storages, and its maximum is the peak allocated bytes. It is
exact for what goes through the dispatcher; it cannot see scratch memory allocated inside one
kernel (e.g. a fused kernel's workspace) nor the allocator's rounding (the CUDA caching allocator
rounds each block up to 512 bytes; ``round_to`` can emulate that).

Why not ``torch.distributed._tools.mem_tracker.MemTracker``: it registers a grad hook on every
parameter (which raises for frozen parameters, i.e. every LoRA/QLoRA base weight) and keeps per
module snapshots (slow on models with many modules). This tracker keeps only what the planner
needs: the peak, by phase, and what the bytes were at the peak.

Categories
    params       storages of ``model.parameters()`` (incl. bnb ``Params4bit`` uint8 data)
    buffers      ``model.buffers()`` (rotary tables, ...)
    quant_state  bnb 4-bit quantization state tensors (absmax, nested absmax, code, offset)
    inputs       the batch (input ids, labels)
    grads        parameter ``.grad`` storages
    optimizer    optimizer state (created in an optimizer phase and still alive when it ends)
    activations  allocated in a forward phase and still alive when it ends (what autograd saved,
                 plus the outputs) - and, in backward, what gradient checkpointing recomputes
    temporaries  everything freed within the phase that allocated it, and backward allocations
                 that are not gradients
    other        anything else that was alive when tracking started or left over from loading

The category of a new storage is only known when its phase ends (does it survive? did it become a
``.grad``?), so storages born in the current phase sit in a provisional bucket and each phase's
peak is resolved against the event log when the phase ends.
"""

from __future__ import annotations

import contextlib
import itertools
import weakref
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

CATEGORIES = (
    "params",
    "buffers",
    "quant_state",
    "inputs",
    "grads",
    "optimizer",
    "activations",
    "temporaries",
    "other",
)
_NEW = "_new"  # provisional bucket: born in the current phase
# Category a storage born in a phase gets when it is still alive at the phase's end.
SURVIVOR_CATEGORY = {
    "load": "other",
    "inputs": "inputs",
    "forward": "activations",
    "backward": "temporaries",
    "optimizer": "optimizer",
}


_LOWP = (torch.bfloat16, torch.float16)


def _matmul_ops() -> tuple:
    aten = torch.ops.aten
    return (aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default)


_MATMULS = _matmul_ops()


def _fp32_matmul(func, args, kwargs):
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    dtype = tensors[0].dtype if tensors else None
    if (
        dtype not in _LOWP
        or any(t.dtype != dtype or t.device.type != "cpu" for t in tensors)
        or any(type(t) is not torch.Tensor and not isinstance(t, torch.nn.Parameter) for t in tensors)
    ):
        return func(*args, **kwargs)
    up = [a.float() if isinstance(a, torch.Tensor) else a for a in args]
    return func(*up, **kwargs).to(dtype)


class _Entry:
    __slots__ = ("nbytes", "category", "final", "born", "died", "phase", "ref", "__weakref__")

    def __init__(self, nbytes: int, category: str, born: int, phase: int):
        self.nbytes = nbytes
        self.category = category  # current bucket (_NEW while its phase runs)
        self.final: str | None = None  # forced category at phase end (grads, params, ...)
        self.born = born
        self.died: int | None = None
        self.phase = phase
        self.ref = None


@dataclass
class PhaseRecord:
    """One run of one phase (e.g. step 2's backward): its peak and what was live at that moment."""

    name: str
    step: int
    start_bytes: int = 0
    end_bytes: int = 0
    peak_bytes: int = 0
    peak_time: int = -1
    breakdown: dict[str, int] = field(default_factory=dict)  # at the peak, resolved at phase end
    _snapshot: dict[str, int] = field(default_factory=dict, repr=False)
    _entries: list = field(default_factory=list, repr=False)
    _recompute: set = field(default_factory=set, repr=False)

    def as_dict(self) -> dict:
        return {
            "phase": self.name,
            "step": self.step,
            "start_bytes": self.start_bytes,
            "end_bytes": self.end_bytes,
            "peak_bytes": self.peak_bytes,
            "breakdown": dict(self.breakdown),
        }


def _quant_state_tensors(qs) -> list[torch.Tensor]:
    out = []
    for name in ("absmax", "code", "offset"):
        t = getattr(qs, name, None)
        if isinstance(t, torch.Tensor):
            out.append(t)
    state2 = getattr(qs, "state2", None)
    if state2 is not None:
        out.extend(_quant_state_tensors(state2))
    return out


def quant_state_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The tensors of every bnb 4-bit ``quant_state`` in the model (absmax, code, nested state)."""
    out = []
    for p in model.parameters():
        qs = getattr(p, "quant_state", None)
        if qs is not None:
            out.extend(_quant_state_tensors(qs))
    return out


def unique_storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and tied weights counted once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if t is None:
            continue
        st = t.untyped_storage()
        seen[id(st)] = st.nbytes()
    return sum(seen.values())


class LiveTensorTracker(TorchDispatchMode):
    """Counts the bytes of live tensor storages; peak overall and per phase, with a breakdown.

    Usage::

        tracker = LiveTensorTracker()
        with tracker:
            with tracker.phase("load"):
                model = build(...)
            tracker.track_module(model)
            for step in range(3):
                tracker.step = step
                with tracker.phase("forward"):
                    loss = model(...).loss
                ...
        tracker.peak_bytes, tracker.records

    ``round_to`` rounds each storage up to a multiple (512 emulates the CUDA caching allocator's
    smallest block; 1, the default, is exact bytes).
    """

    def __init__(self, round_to: int = 1, fp32_matmul: bool = False):
        super().__init__()
        self.round_to = max(1, int(round_to))
        # CPUs without AVX512-BF16 run bf16/fp16 matmuls ~5-50x slower than fp32: compute them in
        # fp32 and cast the result back. Same output tensor (dtype, shape, strides), so the same
        # bytes are counted; the fp32 scratch is invisible to the tracker, like a kernel's workspace.
        self.fp32_matmul = fp32_matmul
        self.totals: dict[str, int] = dict.fromkeys((*CATEGORIES, _NEW), 0)
        self.current_bytes = 0
        self.peak_bytes = 0
        self.step = 0
        self.records: list[PhaseRecord] = []
        self._entries: dict[int, _Entry] = {}  # id(storage) -> entry (removed by the weakref callback)
        self._clock = itertools.count()
        self._now = 0
        self._phase: PhaseRecord | None = None
        self._phase_id = 0
        self._default = "other"  # category of storages born outside any phase
        self._fwd_depth = 0  # module forwards running (recomputation when inside backward)
        self._hooks: list = []
        self._grad_hooks: dict[int, object] = {}
        self._active = 0

    # ------------------------------------------------------------------ bookkeeping
    def _size(self, st) -> int:
        n = int(st.nbytes())
        r = self.round_to
        return -(-n // r) * r if r > 1 else n

    def _on_free(self, key: int, ref) -> None:
        entry = self._entries.get(key)
        if entry is None or entry.ref is not ref:
            return
        del self._entries[key]
        self._now = next(self._clock)
        entry.died = self._now
        self.totals[entry.category] -= entry.nbytes
        self.current_bytes -= entry.nbytes

    def _add_storage(self, st, category: str | None = None) -> _Entry | None:
        key = id(st)
        entry = self._entries.get(key)
        if entry is not None and entry.ref() is st:
            return entry
        nbytes = self._size(st)
        self._now = next(self._clock)
        rec = self._phase
        if category is None and rec is not None:
            cat = _NEW
        else:
            cat = category or self._default
        entry = _Entry(nbytes, cat, self._now, self._phase_id if rec is not None else -1)
        entry.ref = weakref.ref(st, lambda ref, key=key: self._on_free(key, ref))
        self._entries[key] = entry
        self.totals[cat] += nbytes
        self.current_bytes += nbytes
        if rec is not None and cat == _NEW:
            rec._entries.append(entry)
            if self._fwd_depth > 0 and rec.name == "backward":
                rec._recompute.add(id(entry))
        if self.current_bytes > self.peak_bytes:
            self.peak_bytes = self.current_bytes
        if rec is not None and self.current_bytes > rec.peak_bytes:
            rec.peak_bytes = self.current_bytes
            rec.peak_time = self._now
            rec._snapshot = dict(self.totals)
        return entry

    def track_tensor(self, t: torch.Tensor, category: str | None = None, force: bool = False) -> None:
        """Count ``t``'s storage (if not yet counted); ``force`` re-labels it when already counted."""
        if not isinstance(t, torch.Tensor):
            return
        st = t.untyped_storage()
        entry = self._add_storage(st, category)
        if force and category and entry is not None:
            self._relabel(entry, category)

    def _relabel(self, entry: _Entry, category: str) -> None:
        if entry.category == _NEW:
            entry.final = category
            return
        if entry.category != category:
            self.totals[entry.category] -= entry.nbytes
            self.totals[category] += entry.nbytes
            entry.category = category

    def label(self, t: torch.Tensor, category: str) -> None:
        """Label an already counted tensor's storage (provisional ones at their phase's end)."""
        self.track_tensor(t, category, force=True)

    def track_module(self, model: nn.Module, grad_hooks: bool = True) -> None:
        """Count and label a model's parameters, buffers and 4-bit quant states.

        Installs a post-accumulate-grad hook on trainable parameters only (frozen ones have no
        gradient and cannot take one), which labels the ``.grad`` storage as ``grads``.
        """
        for p in model.parameters():
            self.label(p, "params")
            if grad_hooks and p.requires_grad and id(p) not in self._grad_hooks:
                self._grad_hooks[id(p)] = p.register_post_accumulate_grad_hook(self._grad_hook)
        for b in model.buffers():
            self.label(b, "buffers")
        for t in quant_state_tensors(model):
            self.label(t, "quant_state")

    def track_optimizer(self, optimizer) -> None:
        for state in optimizer.state.values():
            for v in state.values():
                if isinstance(v, torch.Tensor):
                    self.label(v, "optimizer")

    def _grad_hook(self, p: torch.Tensor) -> None:
        if p.grad is not None:
            self.label(p.grad, "grads")

    # ------------------------------------------------------------------ phases
    @contextlib.contextmanager
    def phase(self, name: str, step: int | None = None):
        """Run a phase: storages born in it get their category when it ends (see module doc)."""
        if self._phase is not None:
            raise RuntimeError(f"phase {name!r} started inside phase {self._phase.name!r}")
        rec = PhaseRecord(name, self.step if step is None else step)
        rec.start_bytes = rec.peak_bytes = self.current_bytes
        rec.peak_time = self._now
        rec._snapshot = dict(self.totals)
        self._phase_id += 1
        self._phase = rec
        try:
            yield rec
        finally:
            self._phase = None
            self._close(rec)
            self.records.append(rec)

    def _close(self, rec: PhaseRecord) -> None:
        survivor = SURVIVOR_CATEGORY.get(rec.name, "other")
        t = rec.peak_time
        breakdown = {k: v for k, v in rec._snapshot.items() if k != _NEW}
        for k in CATEGORIES:
            breakdown.setdefault(k, 0)
        for entry in rec._entries:
            if entry.died is None:
                final = entry.final or survivor
            elif id(entry) in rec._recompute:
                final = "activations"
            else:
                final = entry.final or "temporaries"
            if entry.born <= t and (entry.died is None or entry.died > t):
                breakdown[final] += entry.nbytes
            if entry.died is None and entry.category == _NEW:
                self.totals[_NEW] -= entry.nbytes
                self.totals[final] += entry.nbytes
                entry.category = final
        rec.breakdown = breakdown
        rec.end_bytes = self.current_bytes
        rec._entries = []
        rec._recompute = set()
        rec._snapshot = {}

    # ------------------------------------------------------------------ results
    def current_breakdown(self) -> dict[str, int]:
        out = {k: self.totals[k] for k in CATEGORIES}
        if self.totals[_NEW]:
            out["unresolved"] = self.totals[_NEW]
        return out

    def phase_peaks(self, steps=None) -> dict[str, int]:
        """Max peak per phase name; with ``steps``, only the training phases of those steps."""
        out: dict[str, int] = {}
        for rec in self.records:
            if steps is not None and (rec.name == "load" or rec.step not in steps):
                continue
            out[rec.name] = max(out.get(rec.name, 0), rec.peak_bytes)
        return out

    def peak_record(self, names=None, steps=None) -> PhaseRecord | None:
        best = None
        for rec in self.records:
            if names is not None and rec.name not in names:
                continue
            if steps is not None and rec.step not in steps:
                continue
            if best is None or rec.peak_bytes > best.peak_bytes:
                best = rec
        return best

    # ------------------------------------------------------------------ mode plumbing
    def _fwd_pre(self, module, args):
        self._fwd_depth += 1

    def _fwd_post(self, module, args, output):
        self._fwd_depth -= 1

    def __enter__(self):
        if self._active == 0:
            from torch.nn.modules.module import (
                register_module_forward_hook,
                register_module_forward_pre_hook,
            )

            self._hooks = [
                register_module_forward_pre_hook(self._fwd_pre),
                register_module_forward_hook(self._fwd_post, always_call=True),
            ]
        self._active += 1
        return super().__enter__()

    def __exit__(self, *args):
        self._active -= 1
        if self._active == 0:
            for h in self._hooks:
                h.remove()
            self._hooks = []
        return super().__exit__(*args)

    def remove_grad_hooks(self) -> None:
        for h in self._grad_hooks.values():
            h.remove()
        self._grad_hooks.clear()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.fp32_matmul and func in _MATMULS and kwargs.get("out") is None:
            out = _fp32_matmul(func, args, kwargs)
        else:
            out = func(*args, **kwargs)
        flat, _ = tree_flatten(out)
        input_storages = None
        for t in flat:
            if isinstance(t, torch.Tensor):
                try:
                    st = t.untyped_storage()
                except (NotImplementedError, RuntimeError):  # e.g. sparse / nested tensors
                    continue
                key = id(st)
                entry = self._entries.get(key)
                if entry is not None and entry.ref() is st:
                    continue
                # An unknown storage that an input already had (a view or an in-place result of a
                # tensor made before tracking started) was not allocated by this op: skip it.
                if input_storages is None:
                    input_storages = self._storage_ids((args, kwargs))
                if key in input_storages:
                    continue
                self._add_storage(st)
        return out

    @staticmethod
    def _storage_ids(tree) -> set[int]:
        ids = set()
        flat, _ = tree_flatten(tree)
        for t in flat:
            if isinstance(t, torch.Tensor):
                try:
                    ids.add(id(t.untyped_storage()))
                except (NotImplementedError, RuntimeError):
                    pass
        return ids
