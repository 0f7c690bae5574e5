"""Binned score counts: what a hospital sends instead of its scores, and the pooled AUC and ROC
curve the server computes from them (numpy only)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

HIST_BINS = 100


def score_histograms(labels: np.ndarray, scores: np.ndarray, bins: int = HIST_BINS) -> tuple[list[int], list[int]]:
    """Counts of predicted probabilities in ``bins`` equal bins, for positives and negatives.

    These aggregate counts (not per-row values) let the server compute a pooled AUC and ROC curve.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    pos, _ = np.histogram(scores[labels == 1], bins=edges)
    neg, _ = np.histogram(scores[labels == 0], bins=edges)
    return pos.astype(int).tolist(), neg.astype(int).tolist()


def auc_from_histograms(pos: Sequence[float], neg: Sequence[float]) -> float:
    """AUC from binned score counts (pairs in the same bin count one half)."""
    p, n = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    if p.sum() == 0 or n.sum() == 0:
        return math.nan
    neg_below = np.cumsum(n) - n
    return float(((p * neg_below).sum() + 0.5 * (p * n).sum()) / (p.sum() * n.sum()))


def roc_from_histograms(pos: Sequence[float], neg: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every bin edge (for plotting)."""
    p, n = np.asarray(pos, dtype=float), np.asarray(neg, dtype=float)
    tpr = np.concatenate([[0.0], np.cumsum(p[::-1])]) / max(p.sum(), 1.0)
    fpr = np.concatenate([[0.0], np.cumsum(n[::-1])]) / max(n.sum(), 1.0)
    return fpr, tpr
