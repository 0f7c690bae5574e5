"""Calibration of predicted probabilities: the calibration line and logistic recalibration.

Definitions follow Van Calster et al. (BMC Medicine 2019) and TRIPOD+AI:

- **calibration slope** ``b`` from the logistic model ``logit P(y=1) = a + b * logit(p)``;
- **calibration intercept** (calibration-in-the-large) ``a`` from ``logit P(y=1) = a + logit(p)``
  (the slope fixed at 1, ``logit(p)`` an offset): 0 and 1 are perfect;
- **logistic recalibration** refits both ``a`` and ``b`` of the first model on a site's labelled
  sample; the recalibrated probability is ``sigmoid(a + b * logit(p))``.

The slope and intercept that *measure* calibration are maximum-likelihood fits (Newton-Raphson on the
exact log-likelihood; NaN where the fit has no finite answer: one class only, or a perfectly
separating score). *Recalibrating* on a small site sample uses :func:`firth_recalibration` instead:
maximum likelihood overfits a sample with few events of one class (a hospital with 93 % positives
has ~3 negatives in a 37-row sample), and the refitted line then is too steep for the hospital's
other patients.
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
            weights: np.ndarray | None = None, start: np.ndarray | None = None) -> np.ndarray | None:
    """Maximum-likelihood coefficients of ``logit P(y=1) = offset + x @ beta`` (Newton from ``start``, default
    0); None if it diverges."""
    weights = np.ones_like(y) if weights is None else weights
    beta = np.zeros(x.shape[1]) if start is None else np.array(start, dtype=np.float64)
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


def _firth(x: np.ndarray, y: np.ndarray, w: np.ndarray, iters: int = 100) -> np.ndarray | None:
    """Firth's penalised maximum-likelihood coefficients of ``logit P(y=1) = x @ beta``; None if no convergence.

    Maximises ``l(beta) + log det I(beta) / 2`` (Jeffreys prior, ``I = X' W X`` the Fisher information
    with ``W = w mu (1 - mu)``) by Newton steps on the modified score ``X' (w (y - mu) + h (1/2 - mu))``,
    ``h`` the diagonal of the weighted hat matrix (Firth, Biometrika 1993; Heinze and Schemper, Stat Med
    2002); steps are capped at 5 and halved until the penalised likelihood rises, as in R's logistf.
    """

    def objective(beta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        eta = x @ beta
        with np.errstate(over="ignore"):
            mu = 1.0 / (1.0 + np.exp(-eta))
        info = (x * (w * mu * (1 - mu))[:, None]).T @ x
        sign, logdet = np.linalg.slogdet(info)
        loglik = float(np.sum(w * (y * eta - np.logaddexp(0.0, eta))))
        return (loglik + 0.5 * logdet if sign > 0 else -math.inf), mu, info

    beta = np.zeros(x.shape[1])
    value, mu, info = objective(beta)
    for _ in range(iters):
        try:
            inverse = np.linalg.inv(info)
        except np.linalg.LinAlgError:
            return None
        h = w * mu * (1 - mu) * np.einsum("ij,jk,ik->i", x, inverse, x)
        step = inverse @ (x.T @ (w * (y - mu) + h * (0.5 - mu)))
        step *= min(1.0, 5.0 / max(float(np.max(np.abs(step))), 1e-300))
        for _ in range(30):  # step halving
            new_value, new_mu, new_info = objective(beta + step)
            if new_value >= value - 1e-12:
                break
            step /= 2
        beta, value, mu, info = beta + step, new_value, new_mu, new_info
        if np.max(np.abs(step)) < 1e-10:
            return beta
    return beta if np.max(np.abs(step)) < 1e-6 else None


def firth_recalibration(labels: np.ndarray, probabilities: np.ndarray,
                        weights: np.ndarray | None = None) -> tuple[float, float]:
    """``(a, b)`` of the recalibration line fitted for a small sample; ``(nan, nan)`` with one class only.

    FLIC, Firth's logistic regression with intercept correction (Puhr, Heinze, Nold, Lusa and
    Geroldinger, Stat Med 2017;36:2302-2317): the slope ``b`` from Firth's penalised likelihood (less
    steep than maximum likelihood's, whose small-sample bias is away from 0, and finite under
    separation), then ``a`` refitted by maximum likelihood with ``b * logit(p)`` as offset, so that
    the mean recalibrated probability equals the sample's event rate (Firth alone pulls it towards 1/2).
    """
    prepared = _prepared(labels, probabilities, weights)
    if prepared is None:
        return math.nan, math.nan
    y, z, w = prepared
    beta = _firth(np.column_stack([np.ones_like(z), z]), y, w)
    if beta is None:
        return math.nan, math.nan
    b = float(beta[1])
    # Newton from Firth's intercept: from 0 it overshoots when the offset puts every probability near 0 or 1
    a = _newton(np.ones((z.size, 1)), y, b * z, weights=w, start=beta[:1])
    return (math.nan, math.nan) if a is None else (float(a[0]), b)


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
