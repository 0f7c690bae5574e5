"""fedheart.calibration against independent references: scikit-learn's unpenalised logistic regression for
the slope (and the recalibration line), a grid maximisation of the likelihood for the offset intercept, and
for Firth's slope the closed form of a two-valued score (half a patient added to each cell of the 2x2 table)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fedheart.calibration import (
    calibration_intercept,
    calibration_slope,
    firth_recalibration,
    logistic_recalibration,
    recalibrated,
)


def miscalibrated(seed: int, n: int = 400, a: float = -0.4, b: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Predictions ``p`` whose true risk is ``sigmoid(a + b * logit(p))`` (too extreme, too high)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    p = 1 / (1 + np.exp(-z))
    y = (rng.random(n) < 1 / (1 + np.exp(-(a + b * z)))).astype(float)
    return y, p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_slope_and_recalibration_match_unpenalised_sklearn(seed: int) -> None:
    y, p = miscalibrated(seed)
    z = np.log(p / (1 - p)).reshape(-1, 1)
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(z, y)
    a, b = logistic_recalibration(y, p)
    assert b == pytest.approx(ref.coef_[0, 0], abs=1e-5)
    assert a == pytest.approx(ref.intercept_[0], abs=1e-5)
    assert calibration_slope(y, p) == pytest.approx(b)
    assert recalibrated(p, a, b) == pytest.approx(ref.predict_proba(z)[:, 1], abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_intercept_maximises_the_offset_likelihood_on_a_grid(seed: int) -> None:
    y, p = miscalibrated(seed)
    z = np.log(p / (1 - p))

    def best(grid: np.ndarray) -> float:
        eta = grid[:, None] + z[None, :]
        return float(grid[np.argmax((y * eta - np.logaddexp(0.0, eta)).sum(axis=1))])

    coarse = best(np.linspace(-3, 3, 601))  # steps of 0.01, then steps of 1e-5 around the best
    assert calibration_intercept(y, p) == pytest.approx(best(np.linspace(coarse - 0.01, coarse + 0.01, 2001)),
                                                        abs=2e-5)


def test_weights_are_repeated_rows() -> None:
    y, p = miscalibrated(3, n=60)
    counts = np.random.default_rng(3).integers(0, 4, y.size)
    repeated = (np.repeat(y, counts), np.repeat(p, counts))
    assert calibration_slope(y, p, weights=counts) == pytest.approx(calibration_slope(*repeated), abs=1e-8)
    assert calibration_intercept(y, p, weights=counts) == pytest.approx(calibration_intercept(*repeated), abs=1e-8)


def test_no_answer_is_nan_and_bad_weights_are_refused() -> None:
    assert math.isnan(calibration_slope(np.ones(5), np.full(5, 0.3)))  # one class only
    assert math.isnan(calibration_intercept(np.array([1.0, 0.0]), np.array([0.6, 0.4]), weights=np.array([1, 0])))
    assert all(math.isnan(v) for v in logistic_recalibration(np.array([0.0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])))
    with pytest.raises(ValueError, match="weights"):
        calibration_slope(np.array([0.0, 1.0]), np.array([0.2, 0.7]), weights=np.array([1.0, -1.0]))


def two_valued(counts: tuple[tuple[int, int], tuple[int, int]], p: tuple[float, float] = (0.3, 0.8)):
    """Rows with score ``p[k]`` for ``counts[k] = (without, with disease)``; Firth's slope in closed form.

    With one binary covariate Firth's estimate is maximum likelihood on the table with 1/2 added to each
    cell (Firth, Biometrika 1993, section 3.3): the logits of ``(events + 1/2) / (rows + 1)`` per score."""
    y = np.concatenate([np.r_[np.zeros(n0), np.ones(n1)] for n0, n1 in counts])
    probs = np.concatenate([np.full(n0 + n1, q) for (n0, n1), q in zip(counts, p, strict=True)])
    rate = [(n1 + 0.5) / (n0 + n1 + 1) for n0, n1 in counts]
    logits = [math.log(q / (1 - q)) for q in p]
    slope = (math.log(rate[1] / (1 - rate[1])) - math.log(rate[0] / (1 - rate[0]))) / (logits[1] - logits[0])
    return y, probs, slope


@pytest.mark.parametrize("counts", [((7, 3), (1, 9)), ((2, 30), (1, 40)), ((5, 0), (0, 6))],
                         ids=["balanced", "few-negatives", "separated"])
def test_firth_slope_is_the_half_corrected_table_and_the_intercept_matches_the_event_rate(counts) -> None:
    y, p, slope = two_valued(counts)
    a, b = firth_recalibration(y, p)
    assert b == pytest.approx(slope, abs=1e-8)
    # FLIC's intercept solves the maximum-likelihood score equation: mean recalibrated risk = event rate
    assert recalibrated(p, a, b).mean() == pytest.approx(y.mean(), abs=1e-9)
    ml = logistic_recalibration(y, p)[1]
    assert math.isnan(ml) if counts[0][1] == 0 else abs(b) < abs(ml)  # shrunk; finite where ML has none


@pytest.mark.parametrize("seed", [6, 7])
def test_firth_slope_maximises_the_penalised_likelihood(seed: int) -> None:
    """A general-purpose optimiser (scipy) on Firth's objective, log-likelihood + log det(information) / 2."""
    from scipy.optimize import minimize

    y, p = miscalibrated(seed, n=40)
    x = np.column_stack([np.ones_like(p), np.log(p / (1 - p))])

    def penalised(beta: np.ndarray) -> float:
        eta = x @ beta
        mu = 1 / (1 + np.exp(-eta))
        info = (x * (mu * (1 - mu))[:, None]).T @ x
        return -float(np.sum(y * eta - np.logaddexp(0.0, eta)) + 0.5 * np.linalg.slogdet(info)[1])

    best = minimize(penalised, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12})
    assert firth_recalibration(y, p)[1] == pytest.approx(best.x[1], abs=1e-5)


def test_firth_weights_are_repeated_rows_and_one_class_has_no_answer() -> None:
    y, p = miscalibrated(4, n=50)
    counts = np.random.default_rng(4).integers(0, 4, y.size)
    fitted = firth_recalibration(y, p, weights=counts)
    assert fitted == pytest.approx(firth_recalibration(np.repeat(y, counts), np.repeat(p, counts)), abs=1e-8)
    assert all(math.isnan(v) for v in firth_recalibration(np.ones(6), np.linspace(0.2, 0.9, 6)))


def test_firth_comes_close_to_maximum_likelihood_on_a_large_sample() -> None:
    y, p = miscalibrated(5, n=20_000)
    assert firth_recalibration(y, p) == pytest.approx(logistic_recalibration(y, p), abs=2e-3)
