"""A memory breakdown: named terms, each live in some phases of a training step.

The peak of a statistic is the largest phase total; totals are always summed from the terms,
never stored beside them (nanoGPT's transformer_sizing notebook).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

# Phases of one steady-state step (step 2 on, optimizer states exist).
FORWARD = "forward"  # end of forward and the loss, when saved activations are largest
BACKWARD = "backward"  # early backward: saved activations still held, a layer's grads in flight
BACKWARD_END = "backward_end"  # late backward: every gradient written, one layer in flight
OPTIMIZER = "optimizer"  # inside optimizer.step(): gradients, states and the step's temporaries
PHASES = (FORWARD, BACKWARD, BACKWARD_END, OPTIMIZER)
ALL_PHASES = frozenset(PHASES)

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


@dataclass(frozen=True)
class MemoryBreakdown:
    """Every term of one estimate; the three statistics are derived from them."""

    terms: tuple[Term, ...]

    @cached_property
    def _allocated_by_phase(self) -> dict[str, int]:
        totals = dict.fromkeys(PHASES, 0)
        for term in self.terms:
            if term.stat == ALLOCATED:
                for phase in term.phases:
                    totals[phase] += term.bytes
        return totals

    def phase_total(self, phase: str, stats: tuple[str, ...] = (ALLOCATED,)) -> int:
        if stats == (ALLOCATED,):
            return self._allocated_by_phase[phase]
        return sum(term.bytes for term in self.terms if phase in term.phases and term.stat in stats)

    @cached_property
    def peak_phase(self) -> str:
        return max(PHASES, key=self._allocated_by_phase.__getitem__)

    @property
    def peak_allocated_bytes(self) -> int:
        """Predicts torch.cuda.max_memory_allocated() over a steady-state step."""
        return self.phase_total(self.peak_phase)

    @property
    def peak_reserved_bytes(self) -> int:
        """Predicts torch.cuda.max_memory_reserved(): allocated plus the allocator's slack."""
        return self.peak_allocated_bytes + sum(t.bytes for t in self.terms if t.stat == RESERVED)

    @property
    def device_used_bytes(self) -> int:
        """Predicts what nvidia-smi shows for the process: reserved plus memory outside the allocator."""
        return self.peak_reserved_bytes + sum(t.bytes for t in self.terms if t.stat == DEVICE)

    def at_peak(self) -> dict[str, int]:
        """Term name -> bytes counted in the peak (a term not live in the peak phase counts 0)."""
        phase = self.peak_phase
        return {
            term.name: (term.bytes if (phase in term.phases or term.stat != ALLOCATED) else 0)
            for term in self.terms
        }

    def by_name(self) -> dict[str, int]:
        return {term.name: term.bytes for term in self.terms}
