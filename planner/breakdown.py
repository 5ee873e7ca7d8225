"""A memory breakdown: named terms, each live in some phases of a training step.

The peak of a statistic is the largest phase total; totals are always summed from the terms,
never stored beside them (nanoGPT's transformer_sizing notebook). The estimator may hand the
sums in and build the terms only when they are read (`MemoryBreakdown.deferred`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# Phases of one steady-state step (step 2 on, optimizer states exist).
FORWARD = "forward"  # end of forward and the loss, when saved activations are largest
BACKWARD = "backward"  # early backward: saved activations still held, a layer's grads in flight
BACKWARD_END = "backward_end"  # late backward: every gradient written, one layer in flight
OPTIMIZER = "optimizer"  # inside optimizer.step(): gradients, states and the step's temporaries
PHASES = (FORWARD, BACKWARD, BACKWARD_END, OPTIMIZER)
ALL_PHASES = frozenset(PHASES)


def grad_phases(grad_accum: int) -> frozenset:
    """When gradients are live: from their backward to the optimizer step, or (accumulating over
    micro-batches) through every phase, since the next micro-batch adds into them."""
    return ALL_PHASES if grad_accum > 1 else frozenset({BACKWARD_END, OPTIMIZER})

# Which statistic a term belongs to.
ALLOCATED = "allocated"  # live tensors: torch.cuda.max_memory_allocated sees them
RESERVED = "reserved"  # caching-allocator slack: in max_memory_reserved, not in allocated
DEVICE = "device"  # outside torch's allocator (CUDA context, paged memory): only nvidia-smi sees it


@dataclass(frozen=True)
class Term:
    """One line of the breakdown: a name like `weights/base`, its bytes, why, and when it is live."""

    name: str
    bytes: int
    note: str
    phases: frozenset = ALL_PHASES
    stat: str = ALLOCATED


class MemoryBreakdown:
    """Every term of one estimate; the three statistics are derived from them.

    Made from terms, or by the estimator from the sums of its terms with the terms built on
    first read (`deferred`): a sweep reads one statistic and never shows a term.
    """

    __slots__ = ("_terms", "_build", "_allocated", "_reserved", "_device")

    def __init__(self, terms: tuple[Term, ...]):
        self._terms = terms
        self._build = None
        self._allocated = None

    @classmethod
    def deferred(cls, allocated_by_phase: dict[str, int], reserved: int, device: int, build: Callable[[], tuple[Term, ...]]) -> MemoryBreakdown:
        """A breakdown whose sums are known: allocated bytes per phase, and every RESERVED and
        every DEVICE term's bytes; `build()` returns the terms they are the sums of."""
        breakdown = cls.__new__(cls)
        breakdown._terms, breakdown._build = None, build
        breakdown._allocated, breakdown._reserved, breakdown._device = allocated_by_phase, reserved, device
        return breakdown

    @property
    def terms(self) -> tuple[Term, ...]:
        if self._terms is None:
            self._terms = self._build()
        return self._terms

    def _sum(self) -> None:
        """One pass over the terms for every statistic."""
        allocated, reserved, device = dict.fromkeys(PHASES, 0), 0, 0
        for term in self._terms:
            if term.stat == ALLOCATED:
                for phase in term.phases:
                    allocated[phase] += term.bytes
            elif term.stat == RESERVED:
                reserved += term.bytes
            elif term.stat == DEVICE:
                device += term.bytes
        self._allocated, self._reserved, self._device = allocated, reserved, device

    @property
    def _allocated_by_phase(self) -> dict[str, int]:
        if self._allocated is None:
            self._sum()
        return self._allocated

    def totals(self) -> tuple[dict[str, int], int, int]:
        """Allocated bytes per phase, and the bytes of all RESERVED and of all DEVICE terms."""
        return dict(self._allocated_by_phase), self._reserved, self._device

    def phase_total(self, phase: str, stats: tuple[str, ...] = (ALLOCATED,)) -> int:
        if stats == (ALLOCATED,):
            return self._allocated_by_phase[phase]
        return sum(term.bytes for term in self.terms if phase in term.phases and term.stat in stats)

    @property
    def peak_phase(self) -> str:
        return max(PHASES, key=self._allocated_by_phase.__getitem__)

    @property
    def peak_allocated_bytes(self) -> int:
        """Predicts torch.cuda.max_memory_allocated() over a steady-state step."""
        return max(self._allocated_by_phase.values())

    @property
    def peak_reserved_bytes(self) -> int:
        """Predicts torch.cuda.max_memory_reserved(): allocated plus the allocator's slack."""
        return self.peak_allocated_bytes + self._reserved

    @property
    def device_used_bytes(self) -> int:
        """Predicts what nvidia-smi shows for the process: reserved plus memory outside the allocator."""
        return self.peak_reserved_bytes + self._device

    def at_peak(self) -> dict[str, int]:
        """Term name -> bytes counted in the peak (a term not live in the peak phase counts 0)."""
        phase = self.peak_phase
        return {
            term.name: (term.bytes if (phase in term.phases or term.stat != ALLOCATED) else 0)
            for term in self.terms
        }

    def by_name(self) -> dict[str, int]:
        return {term.name: term.bytes for term in self.terms}

    def __eq__(self, other: object) -> bool:
        return self.terms == other.terms if isinstance(other, MemoryBreakdown) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.terms)

    def __repr__(self) -> str:
        return f"MemoryBreakdown(terms={self.terms!r})"
