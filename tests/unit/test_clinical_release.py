"""The clinical validation numbers in an evaluate reply (the real ClientApp over LoopbackGrid, the servers and
hospitals of tests/unit/test_malicious_server.py): exact without DP; under ``release.evaluation: dp`` derived
from the noised score histograms alone, so they release nothing the accounted release does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, confusion_matrix

from fedheart.clinical import KEYS
from fedheart.hospital import load_hospital
from fedheart.model import build_model, set_weights
from fedheart.training import predict
from tests.unit.test_malicious_eval import probe_weights
from tests.unit.test_malicious_server import PLAIN, STRICT, Server, hospital, metrics_of, policy_with, preprocessor


def true_scores(h, data_dir: Path, weights) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """The hospital's test labels and the crafted model's probabilities on them (what only it knows)."""
    data = load_hospital(h.data, seed=43, pipeline="project", train_fraction=0.66, name=h.name)
    pre = preprocessor(data_dir)
    model = build_model("logreg", pre.num_features)
    set_weights(model, weights)
    return data.y_test, predict(model, pre.transform(data.test_frame))


def from_released_histograms(m: dict) -> dict[str, float]:
    """Sensitivity, specificity, PPV, NPV, Brier and calibration slope recomputed from the reply's own histograms
    (every row at its bin's centre; by hand, and scikit-learn's weighted logistic regression)."""
    pos, neg = np.asarray(m["hist-pos"], float), np.asarray(m["hist-neg"], float)
    centres = (np.arange(pos.size) + 0.5) / pos.size
    half = pos.size // 2
    tp, fn, fp, tn = pos[half:].sum(), pos[:half].sum(), neg[half:].sum(), neg[:half].sum()
    z = np.log(centres / (1 - centres))
    keep = np.r_[pos, neg] > 0
    labels, weights = np.r_[np.ones_like(z), np.zeros_like(z)][keep], np.r_[pos, neg][keep]
    slope = float("nan")  # the noised histograms may leave one class only: no slope to fit
    if len(set(labels)) == 2:
        fit = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(np.r_[z, z][keep].reshape(-1, 1), labels,
                                                                           sample_weight=weights)
        slope = float(fit.coef_[0, 0])
    return {"sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp), "ppv": tp / (tp + fp), "npv": tn / (tn + fn),
            "brier": float(((pos * (1 - centres) ** 2).sum() + (neg * centres**2).sum()) / (pos.sum() + neg.sum())),
            "calibration-slope": slope}


def test_without_dp_the_reply_holds_the_exact_numbers(tmp_path: Path, data_dir: Path) -> None:
    h = hospital(tmp_path, data_dir, policy=None)
    weights = probe_weights(preprocessor(data_dir), scale=1.0)
    m = metrics_of(Server([h], 1, data_dir, PLAIN).evaluate(weights))
    y, p = true_scores(h, data_dir, weights)
    tn, fp, fn, tp = confusion_matrix(y, (p >= 0.5).astype(int), labels=[0, 1]).ravel()
    assert set(KEYS) <= set(m)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-6)
    assert (m["sensitivity"], m["specificity"]) == pytest.approx((tp / (tp + fn), tn / (tn + fp)))


def test_under_dp_the_numbers_come_from_the_noised_histograms_only(tmp_path: Path, data_dir: Path) -> None:
    h = hospital(tmp_path, data_dir, policy_with(STRICT, {"release.evaluation": "dp"}))
    weights = probe_weights(preprocessor(data_dir))  # crafted: sensitivity = the share of men among the positives
    m = metrics_of(Server([h], 1, data_dir).evaluate(weights))
    derived = from_released_histograms(m)
    for key, value in derived.items():
        assert m[key] == pytest.approx(value, abs=1e-6, nan_ok=True), f"{key}: not from the released histograms"
    y, p = true_scores(h, data_dir, weights)
    tn, fp, fn, tp = confusion_matrix(y, (p >= 0.5).astype(int), labels=[0, 1]).ravel()
    exact = np.array([tp / (tp + fn), tn / (tn + fp), brier_score_loss(y, p)])
    assert not np.allclose([m["sensitivity"], m["specificity"], m["brier"]], exact, atol=1e-3), \
        "the exact numbers of the test rows left the hospital under a DP policy"
    assert h.audit()[-1]["epsilon"] > 0  # the one accounted release
