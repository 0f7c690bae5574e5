"""fedheart.calibration against independent references: scikit-learn's unpenalised logistic regression for
the slope (and the recalibration line), a grid maximisation of the likelihood for the offset intercept."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fedheart.calibration import (
    calibration_intercept,
    calibration_slope,
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
