"""Calibration of predicted probabilities: the calibration line and logistic recalibration.

Definitions follow Van Calster et al. (BMC Medicine 2019) and TRIPOD+AI:

- **calibration slope** ``b`` from the logistic model ``logit P(y=1) = a + b * logit(p)``;
- **calibration intercept** (calibration-in-the-large) ``a`` from ``logit P(y=1) = a + logit(p)``
  (the slope fixed at 1, ``logit(p)`` an offset): 0 and 1 are perfect;
- **logistic recalibration** refits both ``a`` and ``b`` of the first model on a site's labelled
  sample; the recalibrated probability is ``sigmoid(a + b * logit(p))``.

Fitted by Newton-Raphson on the exact (unpenalised) log-likelihood; NaN where the fit has no finite
answer (one class only, or a perfectly separating score).
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-12  # probabilities are clipped to [EPS, 1 - EPS] before the logit


def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` with ``p`` clipped away from 0 and 1."""
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(q) - np.log1p(-q)


def _newton(x: np.ndarray, y: np.ndarray, offset: np.ndarray, iters: int = 100) -> np.ndarray | None:
    """Maximum-likelihood coefficients of ``logit P(y=1) = offset + x @ beta``; None if it diverges."""
    beta = np.zeros(x.shape[1])
    for _ in range(iters):
        eta = offset + x @ beta
        mu = 1.0 / (1.0 + np.exp(-eta))
        w = mu * (1 - mu)
        hess = (x * w[:, None]).T @ x
        grad = x.T @ (y - mu)
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            return None
        beta = beta + step
        if not np.all(np.isfinite(beta)) or np.max(np.abs(beta)) > 1e6:
            return None
        if np.max(np.abs(step)) < 1e-10:
            return beta
    return beta if np.max(np.abs(step)) < 1e-6 else None


def _prepared(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and probabilities ({p.size}) differ in length")
    if y.size == 0 or np.all(y == y[0]):
        return None
    return y, logit(p)


def logistic_recalibration(labels: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` of ``logit P(y=1) = a + b * logit(p)`` fitted on ``labels``; ``(nan, nan)`` if none."""
    prepared = _prepared(labels, probabilities)
    if prepared is None:
        return math.nan, math.nan
    y, z = prepared
    beta = _newton(np.column_stack([np.ones_like(z), z]), y, np.zeros_like(z))
    return (math.nan, math.nan) if beta is None else (float(beta[0]), float(beta[1]))


def calibration_intercept(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Calibration-in-the-large: ``a`` of ``logit P(y=1) = a + logit(p)`` (slope fixed at 1)."""
    prepared = _prepared(labels, probabilities)
    if prepared is None:
        return math.nan
    y, z = prepared
    beta = _newton(np.ones((z.size, 1)), y, z)
    return math.nan if beta is None else float(beta[0])


def calibration_slope(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """``b`` of ``logit P(y=1) = a + b * logit(p)``: below 1 the predictions are too extreme."""
    return logistic_recalibration(labels, probabilities)[1]


def recalibrated(probabilities: np.ndarray, a: float, b: float) -> np.ndarray:
    """``sigmoid(a + b * logit(p))``: the probabilities after logistic recalibration with ``(a, b)``."""
    return 1.0 / (1.0 + np.exp(-(a + b * logit(probabilities))))
