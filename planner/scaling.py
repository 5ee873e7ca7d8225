"""How an estimate's sums grow with batch and sequence length, fitted once per run shape.

Every term is c0 + c1·tokens + c2·batch·seq² bytes with integer c's: weights, gradients and
optimizer states are constant, activations grow with tokens, eager attention scores with
batch·seq². So is each phase's sum. `fit` solves for the coefficients from the terms built at
three small (batch, seq) points and checks them at two large ones; where a sum is not of that
form (a halved odd total, say) it returns None and the estimator sums the terms. Integers
throughout: a fitted sum is the sum of the terms, to the byte.
"""

from __future__ import annotations

from typing import Callable, Sequence

from .breakdown import MemoryBreakdown, Term

PROBES = ((1, 1), (2, 1), (1, 2))  # (batch, seq): tokens 1, 2, 2 and batch·seq² 1, 2, 4
CHECKS = ((3, 1001), (4, 4096))  # large, odd and even: a floor or a cap would show here


class PhaseSums:
    """Allocated bytes per phase (PHASES order), then RESERVED and DEVICE bytes, of any batch and seq_len."""

    __slots__ = ("coefficients",)

    def __init__(self, coefficients: tuple[tuple[int, int, int], ...]):
        self.coefficients = coefficients  # (c0, c1, c2) per sum

    def at(self, batch: int, seq_len: int) -> list[int]:
        tokens = batch * seq_len
        scores = tokens * seq_len
        return [c0 + c1 * tokens + c2 * scores for c0, c1, c2 in self.coefficients]


def sums(terms: Sequence[Term]) -> list[int]:
    allocated, reserved, device = MemoryBreakdown(tuple(terms)).totals()
    return [*allocated.values(), reserved, device]


def fit(terms_at: Callable[[int, int], Sequence[Term]]) -> PhaseSums | None:
    """The sums of `terms_at(batch, seq_len)` as PhaseSums, or None where they are not of its form."""
    coefficients = []
    for f11, f21, f12 in zip(*(sums(terms_at(batch, seq_len)) for batch, seq_len in PROBES)):
        c2, odd = divmod(f12 - f21, 2)
        if odd:
            return None
        c1 = f21 - f11 - c2
        coefficients.append((f11 - c1 - c2, c1, c2))
    fitted = PhaseSums(tuple(coefficients))
    if any(fitted.at(batch, seq_len) != sums(terms_at(batch, seq_len)) for batch, seq_len in CHECKS):
        return None
    return fitted


class MaxOfSums:
    """Per phase, the larger of two fitted sums: a term that is the max of two polynomials (CUDA's
    math-kernel SDPA moments against the logits, planner/estimator.py) makes each phase's sum the max
    of the two sums with either side taken."""

    __slots__ = ("sides",)

    def __init__(self, *sides: PhaseSums):
        self.sides = sides

    def at(self, batch: int, seq_len: int) -> list[int]:
        return [max(values) for values in zip(*(side.at(batch, seq_len) for side in self.sides))]
