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


def _newton(x: np.ndarray, y: np.ndarray, offset: np.ndarray, iters: int = 100,
            weights: np.ndarray | None = None) -> np.ndarray | None:
    """Maximum-likelihood coefficients of ``logit P(y=1) = offset + x @ beta``; None if it diverges."""
    weights = np.ones_like(y) if weights is None else weights
    beta = np.zeros(x.shape[1])
    for _ in range(iters):
        eta = offset + x @ beta
        with np.errstate(over="ignore"):  # a diverging fit (separation): exp overflows to inf, mu to 0
            mu = 1.0 / (1.0 + np.exp(-eta))
        w = weights * mu * (1 - mu)
        hess = (x * w[:, None]).T @ x
        grad = x.T @ (weights * (y - mu))
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


def _prepared(labels: np.ndarray, probabilities: np.ndarray,
              weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if y.shape != p.shape or y.shape != w.shape:
        raise ValueError(f"labels ({y.size}), probabilities ({p.size}) and weights ({w.size}) differ in length")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite and >= 0")
    if w[y == 1].sum() <= 0 or w[y != 1].sum() <= 0:  # one class only (or no rows)
        return None
    return y, logit(p), w


def logistic_recalibration(labels: np.ndarray, probabilities: np.ndarray,
                           weights: np.ndarray | None = None) -> tuple[float, float]:
    """``(a, b)`` of ``logit P(y=1) = a + b * logit(p)`` fitted on ``labels``; ``(nan, nan)`` if none.

    ``weights``: a count per row (e.g. binned rows, or noisy counts); default 1 each."""
    prepared = _prepared(labels, probabilities, weights)
    if prepared is None:
        return math.nan, math.nan
    y, z, w = prepared
    beta = _newton(np.column_stack([np.ones_like(z), z]), y, np.zeros_like(z), weights=w)
    return (math.nan, math.nan) if beta is None else (float(beta[0]), float(beta[1]))


def calibration_intercept(labels: np.ndarray, probabilities: np.ndarray,
                          weights: np.ndarray | None = None) -> float:
    """Calibration-in-the-large: ``a`` of ``logit P(y=1) = a + logit(p)`` (slope fixed at 1)."""
    prepared = _prepared(labels, probabilities, weights)
    if prepared is None:
        return math.nan
    y, z, w = prepared
    beta = _newton(np.ones((z.size, 1)), y, z, weights=w)
    return math.nan if beta is None else float(beta[0])


def calibration_slope(labels: np.ndarray, probabilities: np.ndarray, weights: np.ndarray | None = None) -> float:
    """``b`` of ``logit P(y=1) = a + b * logit(p)``: below 1 the predictions are too extreme."""
    return logistic_recalibration(labels, probabilities, weights)[1]


def recalibrated(probabilities: np.ndarray, a: float, b: float) -> np.ndarray:
    """``sigmoid(a + b * logit(p))``: the probabilities after logistic recalibration with ``(a, b)``."""
    return 1.0 / (1.0 + np.exp(-(a + b * logit(probabilities))))
