"""Privacy accounting: the ledger's epsilon is Opacus' RDP accountant's; calibration fits the budget."""

from __future__ import annotations

import pytest
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from fedheart.privacy.ledger import BudgetError, Ledger, calibrate_noise


def opacus_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    acc = RDPAccountant()
    acc.history = list(history)
    return float(acc.get_epsilon(delta))


def test_record_merges_like_opacus_and_epsilon_is_opacus_rdp() -> None:
    ledger = Ledger()
    ledger.record(20.0, 1.0, 1)
    ledger.record(1.3, 0.08, 100)
    ledger.record(1.3, 0.08, 100)
    assert ledger.history == [(20.0, 1.0, 1), (1.3, 0.08, 200)]
    assert ledger.epsilon(1e-5) == pytest.approx(opacus_epsilon([(20.0, 1.0, 1), (1.3, 0.08, 200)], 1e-5), rel=1e-12)
    assert Ledger().epsilon(1e-5) == 0.0


def test_calibration_without_earlier_releases_is_opacus_get_noise_multiplier() -> None:
    z = calibrate_noise(1.0, 1e-5, 0.08, 1500, Ledger())
    assert z == get_noise_multiplier(target_epsilon=1.0, target_delta=1e-5, sample_rate=0.08, steps=1500,
                                     accountant="rdp", epsilon_tolerance=0.01)


@pytest.mark.parametrize("target", [0.5, 1.0, 4.0])
def test_calibration_on_top_of_the_statistics_release_spends_the_target_without_exceeding(target: float) -> None:
    spent = Ledger([(10.0, 1.0, 1)])  # the preprocessing statistics
    z = calibrate_noise(target, 1e-5, 1 / 13, 1500, spent)
    total = opacus_epsilon([(10.0, 1.0, 1), (z, 1 / 13, 1500)], 1e-5)
    assert target - 0.011 <= total <= target
    # the statistics cost something: more noise than for the training steps alone
    assert z > calibrate_noise(target, 1e-5, 1 / 13, 1500, Ledger())


def test_budget_already_spent_is_a_clear_error() -> None:
    with pytest.raises(BudgetError, match="already spent"):
        calibrate_noise(1.0, 1e-5, 0.1, 100, Ledger([(0.3, 1.0, 1)]))


def test_would_exceed_looks_at_the_next_release() -> None:
    ledger = Ledger([(1.0, 0.1, 100)])
    after = opacus_epsilon([(1.0, 0.1, 200)], 1e-5)
    assert not ledger.would_exceed((1.0, 0.1, 100), 1e-5, after + 1e-6)
    assert ledger.would_exceed((1.0, 0.1, 100), 1e-5, after - 1e-3)
    assert not ledger.would_exceed((1.0, 0.1, 10**6), 1e-5, None)  # no budget
