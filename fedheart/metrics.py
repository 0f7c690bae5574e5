"""Evaluation metrics on a hospital's own test rows: ROC AUC and accuracy (scikit-learn).

The pooled metrics the server computes from binned counts are in :mod:`fedheart.histograms`.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, NaN when the test set holds a single class."""
    if len(np.unique(labels)) < 2:
        return math.nan
    return float(roc_auc_score(labels, scores))


def accuracy(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """Share of rows whose thresholded probability equals the label."""
    return float(accuracy_score(labels, (scores >= threshold).astype(int))) if len(labels) else math.nan
