"""A hospital's privacy ledger: everything it released under DP, and the epsilon that costs.

Entries are Opacus ``RDPAccountant.history`` triples ``(noise_multiplier, sample_rate, steps)``.
A Gaussian mechanism released once (the preprocessing statistics) is the triple ``(z, 1.0, 1)``;
DP-SGD adds ``(z, q, steps)``. The ledger is what survives from message to message (the ClientApp
keeps it in ``context.state``), so epsilon is cumulative over the statistics and all rounds.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Opacus (~3 s to import) only when epsilon is computed: every ClientApp imports this module
    from opacus.accountants import RDPAccountant

Entry = tuple[float, float, int]
# Rounding slack when comparing a prospective epsilon with the budget (RDP sums in floating point).
BUDGET_SLACK = 1e-9


class BudgetError(ValueError):
    """The requested privacy budget cannot be met; the message says why."""


@dataclass
class Ledger:
    """RDP history of one hospital for one run, plus the noise multiplier calibrated for it."""

    history: list[Entry] = field(default_factory=list)
    noise_multiplier: float | None = None  # calibrated once for the whole run (target-epsilon mode)

    def accountant(self, extra: Iterable[Entry] = ()) -> RDPAccountant:
        """An Opacus RDP accountant holding this history (and ``extra`` prospective entries)."""
        from opacus.accountants import RDPAccountant

        acc = RDPAccountant()
        acc.history = [*self.history, *extra]
        return acc

    def epsilon(self, delta: float, extra: Iterable[Entry] = ()) -> float:
        """Cumulative epsilon at ``delta`` (0 before any release), with Opacus' default RDP orders."""
        acc = self.accountant(extra)
        if not acc.history:
            return 0.0
        with warnings.catch_warnings():  # "Optimal order is the largest alpha": the bound is just looser
            warnings.simplefilter("ignore", UserWarning)
            return float(acc.get_epsilon(delta))

    def record(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Add a release; merges with the last entry like ``RDPAccountant.step`` does."""
        if self.history and self.history[-1][:2] == (noise_multiplier, sample_rate):
            z, q, n = self.history[-1]
            self.history[-1] = (z, q, n + steps)
        else:
            self.history.append((float(noise_multiplier), float(sample_rate), int(steps)))

    def would_exceed(self, entry: Entry, delta: float, budget: float | None,
                     reserved: Iterable[Entry] = ()) -> bool:
        """Whether releasing ``entry`` next (with the ``reserved`` releases still to come) would take
        epsilon over ``budget`` (None: no budget)."""
        return budget is not None and self.epsilon(delta, [entry, *reserved]) > budget + BUDGET_SLACK


def calibrate_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                    spent: Ledger, tolerance: float = 0.01, reserved: Iterable[Entry] = ()) -> float:
    """Noise multiplier that fits ``steps`` DP-SGD steps into ``target_epsilon`` on top of what
    ``spent`` already holds and the ``reserved`` releases still to come (epsilon within ``tolerance``
    below the target).

    Opacus' ``get_noise_multiplier`` (same RDP accountant) calibrates the training steps alone; if
    earlier releases are in the ledger, the noise is then raised by bisection until the total fits.
    """
    if reserved:
        spent = Ledger(history=[*spent.history, *reserved])
    already = spent.epsilon(delta)
    if already >= target_epsilon:
        raise BudgetError(f"epsilon {already:.3f} is already spent before training; privacy.epsilon="
                          f"{target_epsilon} leaves nothing for DP-SGD")

    def total(z: float) -> float:
        return spent.epsilon(delta, [(z, sample_rate, steps)])

    from opacus.accountants.utils import get_noise_multiplier

    try:
        with warnings.catch_warnings():  # "Optimal order is the largest alpha", as in Ledger.epsilon
            warnings.simplefilter("ignore", UserWarning)
            low = float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                             sample_rate=sample_rate, steps=steps, accountant="rdp",
                                             epsilon_tolerance=tolerance))
    except ValueError as exc:  # "The privacy budget is too low."
        raise BudgetError(f"privacy.epsilon={target_epsilon} at delta={delta:g} cannot cover {steps} DP-SGD "
                          f"steps: {exc}") from None
    if total(low) <= target_epsilon:
        return low
    high = 2 * low
    while total(high) > target_epsilon:  # the total tends to `already` as the noise grows
        high *= 2
    while target_epsilon - total(high) > tolerance:
        mid = (low + high) / 2
        if total(mid) <= target_epsilon:
            high = mid
        else:
            low = mid
    return high
