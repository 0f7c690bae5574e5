"""DP-SGD rounds on a real hospital: cumulative epsilon equal to Opacus', budget never exceeded."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict
from opacus.accountants import RDPAccountant

from client_app.privacy import load_ledger, save_ledger
from fedheart import stats as fstats
from fedheart.hospital import HospitalData, load_hospital, train_round
from fedheart.model import build_model, get_weights
from fedheart.preprocess import Preprocessor
from fedheart.privacy import EPSILON, EXHAUSTED, NOISE
from fedheart.privacy.dpsgd import DPSettings, train_private
from fedheart.privacy.ledger import Ledger
from fedheart.specs import ModelSpec, TrainConfig

SPEC = ModelSpec("logreg")
CFG = TrainConfig(lr=0.05, local_steps=20, batch_size=16)
DELTA = 1e-4


@pytest.fixture(scope="module")
def cleveland(data_dir: Path) -> tuple[HospitalData, Preprocessor]:
    data = load_hospital(data_dir / "processed.cleveland.data", seed=43, pipeline="project", name="cleveland")
    return data, data.preprocessor(fstats.GlobalStats.from_totals(data.statistics()))


def initial(pre: Preprocessor) -> dict[str, np.ndarray]:
    return get_weights(build_model("logreg", pre.num_features, seed=0))


def opacus_epsilon(history: list[tuple[float, float, int]], delta: float = DELTA) -> float:
    acc = RDPAccountant()
    acc.history = list(history)
    return float(acc.get_epsilon(delta))


def test_reported_epsilon_is_cumulative_and_equals_opacus(cleveland: tuple[HospitalData, Preprocessor]) -> None:
    data, pre = cleveland
    dp = DPSettings(noise_multiplier=1.5, epsilon=None, delta=DELTA, stats_noise_multiplier=20.0, noise_seed=3)
    ledger = Ledger()
    data.statistics(dp, ledger)
    weights, reported = initial(pre), []
    for r in (1, 2, 3):
        weights, metrics = train_round(data, pre, weights, SPEC, CFG, seed=0, server_round=r, dp=dp, ledger=ledger)
        assert metrics[EXHAUSTED] == 0 and metrics["local-steps"] == CFG.local_steps
        assert math.isnan(metrics["train-loss"])  # not released under DP
        reported.append(metrics[EPSILON])
    q = 1 / math.ceil(len(data.y_train) / CFG.batch_size)  # Opacus' Poisson rate: 1 / batches per epoch
    assert reported[-1] == pytest.approx(opacus_epsilon([(20.0, 1.0, 1), (1.5, q, 3 * CFG.local_steps)]), rel=1e-9)
    assert reported[0] < reported[1] < reported[2]
    # a fresh accountant per round (Flower's Opacus example) would report far less than what was spent
    assert opacus_epsilon([(1.5, q, CFG.local_steps)]) < 0.7 * reported[-1]


def test_ledger_survives_messages_through_context_state() -> None:
    context = Context(run_id=1, node_id=2, node_config={}, state=RecordDict(), run_config={})
    assert load_ledger(context) == Ledger()
    save_ledger(context, Ledger([(20.0, 1.0, 1), (1.5, 1 / 13, 60)], noise_multiplier=1.5))
    assert load_ledger(context) == Ledger([(20.0, 1.0, 1), (1.5, 1 / 13, 60)], noise_multiplier=1.5)


def test_small_budget_stops_training_before_it_would_be_exceeded(cleveland: tuple[HospitalData, Preprocessor]) -> None:
    data, pre = cleveland
    q = 1 / math.ceil(len(data.y_train) / CFG.batch_size)
    budget = opacus_epsilon([(20.0, 1.0, 1), (1.0, q, 2 * CFG.local_steps)]) + 1e-6  # room for 2 rounds exactly
    dp = DPSettings(noise_multiplier=1.0, epsilon=budget, delta=DELTA, stats_noise_multiplier=20.0, noise_seed=4)
    ledger = Ledger()
    data.statistics(dp, ledger)
    weights = initial(pre)
    trained = []
    for r in range(1, 6):
        new, metrics = train_round(data, pre, weights, SPEC, CFG, seed=0, server_round=r, dp=dp, ledger=ledger)
        assert metrics[EPSILON] <= budget
        trained.append(not metrics[EXHAUSTED])
        if metrics[EXHAUSTED]:
            assert metrics["local-steps"] == 0
            assert all(np.array_equal(new[k], weights[k]) for k in weights)  # nothing learned, nothing released
        weights = new
    assert trained == [True, True, False, False, False]
    assert ledger.epsilon(DELTA) <= budget


def test_target_epsilon_is_spent_by_the_last_round(cleveland: tuple[HospitalData, Preprocessor]) -> None:
    data, pre = cleveland
    dp = DPSettings(noise_multiplier=None, epsilon=2.0, delta=DELTA, rounds=3, stats_noise_multiplier=20.0,
                    noise_seed=5)
    ledger = Ledger()
    data.statistics(dp, ledger)
    weights = initial(pre)
    eps = []
    for r in (1, 2, 3, 4):
        weights, metrics = train_round(data, pre, weights, SPEC, CFG, seed=0, server_round=r, dp=dp, ledger=ledger)
        eps.append(metrics[EPSILON])
        assert metrics[NOISE] == ledger.noise_multiplier
    assert 2.0 - 0.011 <= eps[2] <= 2.0
    assert eps[3] == eps[2]  # round 4 is beyond the planned run: refused, nothing more spent


def test_noise_is_fresh_unless_an_experiment_fixes_it(cleveland: tuple[HospitalData, Preprocessor]) -> None:
    data, pre = cleveland

    def one_round(seed: int | None) -> np.ndarray:
        dp = DPSettings(noise_multiplier=1.0, epsilon=None, delta=DELTA, noise_seed=seed)
        weights, _ = train_round(data, pre, initial(pre), SPEC, CFG, seed=0, server_round=1, dp=dp, ledger=Ledger())
        return weights["linear.weight"]

    assert not np.array_equal(one_round(None), one_round(None))
    assert np.array_equal(one_round(7), one_round(7))


def test_empty_poisson_batches_are_noisy_steps_that_count() -> None:
    torch.manual_seed(0)
    model = build_model("logreg", 3)
    x = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
    y = np.array([0, 1, 1])
    ledger = Ledger()
    dp = DPSettings(noise_multiplier=1.0, epsilon=None, delta=0.01, noise_seed=1)
    metrics = train_private(model, x, y, TrainConfig(lr=0.1, local_steps=40, batch_size=1), dp, ledger,
                            server_round=1)  # P(empty batch) = (2/3)^3: several of the 40 steps are empty
    assert metrics["local-steps"] == 40
    assert ledger.history == [(1.0, 1 / 3, 40)]


def test_delta_must_be_below_one_over_the_rows_and_fedprox_is_refused(cleveland) -> None:
    data, pre = cleveland
    with pytest.raises(ValueError, match="not below 1 /"):
        train_round(data, pre, initial(pre), SPEC, CFG, seed=0, server_round=1,
                    dp=DPSettings(noise_multiplier=1.0, delta=0.5), ledger=Ledger())
    with pytest.raises(ValueError, match="proximal"):
        train_round(data, pre, initial(pre), SPEC, TrainConfig(proximal_mu=0.1), seed=0, server_round=1,
                    dp=DPSettings(noise_multiplier=1.0, delta=DELTA), ledger=Ledger())
