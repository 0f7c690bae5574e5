"""Clinical validation numbers of a model on labelled rows (TRIPOD+AI; Van Calster et al. 2019).

Brier score, calibration intercept and slope (:mod:`fedheart.calibration`), ROC AUC with a 95 %
DeLong confidence interval, and sensitivity, specificity, PPV and NPV at a threshold.

Two entry points give the same keys:

- :func:`validation` from a hospital's own labels and predicted probabilities (exact);
- :func:`validation_from_histograms` from per-class counts of probabilities in equal bins (what the
  server receives, summed over hospitals for the pooled test set, or a DP-noised release): every row
  is taken at its bin's centre, so Brier and calibration are approximations (bins of width 0.01: see
  tests/unit/test_clinical.py) while AUC, its interval and the rates at a bin edge are exact for the
  binned scores.

DeLong's interval is computed from counts of positives and negatives at each distinct score (ties
count one half), so the hospital (distinct scores) and the server (bins) share one formula.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedheart.calibration import calibration_intercept, calibration_slope

THRESHOLD = 0.5  # a patient is predicted diseased when the probability is >= this (as accuracy is)
Z95 = 1.959963984540054  # standard normal quantile of 0.975
MIN_EVENTS = 100  # fewer events: too few for a precise validation (Riley et al., BMJ 2024; Collins 2016)
MIN_TEST_ROWS = 50

KEYS = ("brier", "calibration-intercept", "calibration-slope", "auc-ci-low", "auc-ci-high",
        "sensitivity", "specificity", "ppv", "npv")


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else math.nan


def rates(tp: float, fp: float, tn: float, fn: float) -> dict[str, float]:
    """Sensitivity, specificity, PPV and NPV from the confusion counts (NaN for an empty denominator)."""
    return {"sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
            "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn)}


def delong_interval(pos: Sequence[float], neg: Sequence[float], z: float = Z95) -> tuple[float, float, float]:
    """``(auc, low, high)``: AUC and DeLong's interval from counts of positives and negatives at each of
    a sequence of increasing scores (or bins); NaN where either class has fewer than 2 rows."""
    p, n = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    m, k = p.sum(), n.sum()
    if m < 2 or k < 2:
        return math.nan, math.nan, math.nan
    # placement values: the share of negatives a positive at score s beats, and of positives above a negative
    v10 = (np.cumsum(n) - n + 0.5 * n) / k
    v01 = (m - np.cumsum(p) + 0.5 * p) / m
    auc = float((p * v10).sum() / m)
    s10 = float((p * (v10 - auc) ** 2).sum() / (m - 1))
    s01 = float((n * (v01 - auc) ** 2).sum() / (k - 1))
    half = z * math.sqrt(max(s10 / m + s01 / k, 0.0))
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def _counts_by_score(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, index = np.unique(scores, return_inverse=True)
    size = int(index.max()) + 1 if index.size else 0
    return (np.bincount(index[labels == 1], minlength=size), np.bincount(index[labels == 0], minlength=size))


def auc_interval(labels: np.ndarray, probabilities: np.ndarray, z: float = Z95) -> tuple[float, float, float]:
    """``(auc, low, high)`` of predicted probabilities: DeLong's interval over the distinct scores."""
    return delong_interval(*_counts_by_score(np.asarray(labels, dtype=float).ravel(),
                                             np.asarray(probabilities, dtype=float).ravel()), z)


def validation(labels: np.ndarray, probabilities: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float]:
    """The :data:`KEYS` of the model on these rows (computed at the hospital; scalars only)."""
    y = np.asarray(labels, dtype=float).ravel()
    p = np.asarray(probabilities, dtype=float).ravel()
    if y.size == 0:
        return dict.fromkeys(KEYS, math.nan)
    predicted = p >= threshold
    _, low, high = auc_interval(y, p)
    return {"brier": float(np.mean((p - y) ** 2)),
            "calibration-intercept": calibration_intercept(y, p), "calibration-slope": calibration_slope(y, p),
            "auc-ci-low": low, "auc-ci-high": high,
            **rates(tp=float((predicted & (y == 1)).sum()), fp=float((predicted & (y == 0)).sum()),
                    tn=float((~predicted & (y == 0)).sum()), fn=float((~predicted & (y == 1)).sum()))}


def bin_centres(bins: int) -> np.ndarray:
    return (np.arange(bins) + 0.5) / bins


def validation_from_histograms(pos: Sequence[float], neg: Sequence[float],
                               threshold: float = THRESHOLD) -> dict[str, float]:
    """The :data:`KEYS` from binned counts (equal bins over [0, 1]); the four rates are NaN unless
    ``threshold`` is a bin edge."""
    p, n = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    bins = p.size
    if p.shape != n.shape:
        raise ValueError(f"histograms of {p.size} and {n.size} bins")
    total = p.sum() + n.sum()
    if total <= 0:
        return dict.fromkeys(KEYS, math.nan)
    c = bin_centres(bins)
    labels, probs, weights = np.r_[np.ones(bins), np.zeros(bins)], np.r_[c, c], np.r_[p, n]
    _, low, high = delong_interval(p, n)
    edge = threshold * bins
    k = round(edge)
    at = (rates(tp=p[k:].sum(), fp=n[k:].sum(), tn=n[:k].sum(), fn=p[:k].sum()) if abs(edge - k) < 1e-9
          else dict.fromkeys(("sensitivity", "specificity", "ppv", "npv"), math.nan))
    return {"brier": float(((p * (1 - c) ** 2).sum() + (n * c**2).sum()) / total),
            "calibration-intercept": calibration_intercept(labels, probs, weights=weights),
            "calibration-slope": calibration_slope(labels, probs, weights=weights),
            "auc-ci-low": low, "auc-ci-high": high, **at}


def reliability(pos: Sequence[float], neg: Sequence[float], groups: int = 10) -> dict[str, list[float]]:
    """Reliability-diagram points from binned counts: per group of bins (``groups`` equal ranges of the
    predicted probability) the mean predicted probability, the observed share of positives and the rows."""
    p, n = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    if p.size % groups:
        raise ValueError(f"{p.size} bins cannot be grouped into {groups} equal ranges")
    c = bin_centres(p.size)
    gp, gn = p.reshape(groups, -1), n.reshape(groups, -1)
    rows = gp.sum(1) + gn.sum(1)
    keep = rows > 0
    predicted = ((gp + gn) * c.reshape(groups, -1)).sum(1)[keep] / rows[keep]
    observed = gp.sum(1)[keep] / rows[keep]
    return {"predicted": predicted.tolist(), "observed": observed.tolist(), "rows": rows[keep].tolist()}


def warnings_for(test_rows: float, events: float) -> list[str]:
    """Why a hospital's validation is imprecise: under :data:`MIN_EVENTS` events or :data:`MIN_TEST_ROWS` rows."""
    out = []
    if events < MIN_EVENTS:
        out.append(f"only {events:.0f} events (< {MIN_EVENTS}): calibration and AUC are imprecise")
    if test_rows < MIN_TEST_ROWS:
        out.append(f"only {test_rows:.0f} test rows (< {MIN_TEST_ROWS}): the numbers are not reliable")
    return out


def adoption(federated: Sequence[float] | None, local: Sequence[float] | None) -> str:
    """Does the federated model beat the hospital's local-only model beyond the 95 % AUC intervals?"""
    if not local or not all(isinstance(v, float | int) and math.isfinite(v) for v in local):
        return "no local-only baseline to compare with"
    if not federated or not all(isinstance(v, float | int) and math.isfinite(v) for v in federated):
        return "no AUC interval for the federated model"
    if federated[0] > local[1]:
        return "yes: the federated model's AUC interval lies above the local-only model's"
    if federated[1] < local[0]:
        return "no: the local-only model's AUC interval lies above the federated model's"
    return "not shown: the AUC intervals overlap"
