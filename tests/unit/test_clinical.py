"""fedheart.clinical against independent references (scikit-learn, a pairwise DeLong written from the paper,
confusion counts by hand), its histogram-pooled numbers against the exact ones, and the summary's keys."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from sklearn.metrics import brier_score_loss, confusion_matrix, roc_auc_score

from fedheart.calibration import calibration_intercept, calibration_slope
from fedheart.clinical import (
    KEYS,
    MIN_EVENTS,
    adoption,
    auc_interval,
    reliability,
    validation,
    validation_from_histograms,
)
from fedheart.histograms import score_histograms
from fedheart.report import write_report
from fedheart.summary import summary_table
from tests.unit.test_report import final_eval, run_dir  # noqa: F401 (run_dir: a pytest fixture)

Z = 1.959963984540054


def sample(seed: int, n: int = 300, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.45).astype(int)
    p = 1 / (1 + np.exp(-(1.6 * (y - 0.5) + rng.normal(0, 1.2, n))))
    return y, (np.round(p, 1) if ties else p)


def pairwise_delong(y: np.ndarray, p: np.ndarray) -> tuple[float, float, float]:
    """DeLong, DeLong & Clarke-Pearson (1988) from the pair kernel psi(x, y) = 1, 1/2, 0, element by element."""
    x, w = p[y == 1], p[y == 0]
    psi = (x[:, None] > w[None, :]) + 0.5 * (x[:, None] == w[None, :])
    auc = psi.mean()
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    var = v10.var(ddof=1) / len(x) + v01.var(ddof=1) / len(w)
    return auc, auc - Z * math.sqrt(var), auc + Z * math.sqrt(var)


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_hospital_metrics_match_independent_references(ties: bool) -> None:
    y, p = sample(0, ties=ties)
    got = validation(y, p)
    assert set(got) == set(KEYS)
    assert got["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    auc, low, high = auc_interval(y, p)
    assert auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert (auc, got["auc-ci-low"], got["auc-ci-high"]) == pytest.approx(pairwise_delong(y, p), abs=1e-12)
    assert (low, high) == (got["auc-ci-low"], got["auc-ci-high"])
    tn, fp, fn, tp = confusion_matrix(y, (p >= 0.5).astype(int), labels=[0, 1]).ravel()
    assert got["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert got["specificity"] == pytest.approx(tn / (tn + fp))
    assert got["ppv"] == pytest.approx(tp / (tp + fp))
    assert got["npv"] == pytest.approx(tn / (tn + fn))


def test_interval_covers_the_true_auc_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(5)
    true_auc = 0.5 * (1 + math.erf(1.2 / 2))  # scores N(1.2, 1) for positives, N(0, 1) for negatives
    hits = 0
    for _ in range(400):
        y = np.r_[np.ones(60, int), np.zeros(80, int)]
        p = 1 / (1 + np.exp(-np.r_[rng.normal(1.2, 1, 60), rng.normal(0, 1, 80)]))
        _, low, high = auc_interval(y, p)
        hits += low <= true_auc <= high
    assert 0.91 <= hits / 400 <= 0.98, hits


def test_too_few_rows_give_nan_not_an_error() -> None:
    got = validation(np.array([1, 0, 0]), np.array([0.9, 0.2, 0.4]))  # a single positive: no interval
    assert math.isnan(got["auc-ci-low"]) and math.isnan(got["auc-ci-high"])
    assert all(math.isnan(v) for v in validation(np.array([]), np.array([])).values())


def test_histogram_numbers_match_the_exact_ones() -> None:
    """The server's numbers from 100-bin counts: exact for the binned scores, close to the exact ones."""
    y, p = sample(1, n=800)
    pos, neg = score_histograms(y, p)
    binned = (np.minimum(np.floor(p * 100), 99) + 0.5) / 100  # each score at its bin's centre
    hist = validation_from_histograms(pos, neg)
    _, low, high = pairwise_delong(y, binned)
    assert (hist["auc-ci-low"], hist["auc-ci-high"]) == pytest.approx((low, high), abs=1e-12)
    exact = validation(y, p)
    for key in ("sensitivity", "specificity", "ppv", "npv"):  # 0.5 is a bin edge: the same counts
        assert hist[key] == pytest.approx(exact[key], abs=1e-12), key
    assert hist["brier"] == pytest.approx(brier_score_loss(y, p), abs=2e-4)
    assert hist["calibration-slope"] == pytest.approx(calibration_slope(y, p), abs=0.01)
    assert hist["calibration-intercept"] == pytest.approx(calibration_intercept(y, p), abs=0.005)
    assert abs(hist["auc-ci-low"] - exact["auc-ci-low"]) < 0.005


def test_pooled_histograms_give_the_pooled_test_set() -> None:
    parts = [sample(s, n=n) for s, n in ((2, 120), (3, 90), (4, 40))]
    y, p = np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])
    final = {}
    for i, (yy, pp) in enumerate(parts):
        pos, neg = score_histograms(yy, pp)
        final[f"h{i}"] = {"accuracy": 0.7, "auc": roc_auc_score(yy, pp), "loss": 0.5, "num-examples": len(yy),
                          "hist-pos": pos, "hist-neg": neg, **validation(yy, pp)}
    _, summary = summary_table(final, {}, {})
    pooled = summary["pooled"]
    tn, fp, fn, tp = confusion_matrix(y, (p >= 0.5).astype(int)).ravel()
    assert pooled["test-rows"] == len(y) and pooled["events"] == int(y.sum())
    assert pooled["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert pooled["specificity"] == pytest.approx(tn / (tn + fp))
    binned = (np.minimum(np.floor(p * 100), 99) + 0.5) / 100
    assert pooled["auc-ci"] == pytest.approx(list(pairwise_delong(y, binned)[1:]), abs=1e-12)
    assert pooled["brier"] == pytest.approx(brier_score_loss(y, p), abs=3e-4)
    for name, (yy, pp) in zip(final, parts, strict=True):  # each hospital: its own exact numbers
        row = summary["hospitals"][name]
        assert row["auc-ci"] == pytest.approx(list(pairwise_delong(yy, pp)[1:]))
        assert row["brier"] == pytest.approx(brier_score_loss(yy, pp))
        assert {"calibration-slope", "calibration-intercept", "sensitivity", "specificity"} <= set(row)
        assert any("events" in w for w in row["warnings"]), "fewer than 100 events: warned"
    assert any("test rows" in w for w in summary["hospitals"]["h2"]["warnings"])  # 40 rows < 50
    assert not any("test rows" in w for w in summary["hospitals"]["h0"]["warnings"])
    assert any("events" in w for w in pooled["warnings"]) == (int(y.sum()) < MIN_EVENTS)


def test_reliability_points() -> None:
    pos = [0] * 100
    neg = [0] * 100
    pos[5], neg[5], pos[95] = 1, 3, 2  # 4 rows at 0.055 (1 positive), 2 positives at 0.955
    points = reliability(pos, neg)
    assert points["predicted"] == pytest.approx([0.055, 0.955])
    assert points["observed"] == pytest.approx([0.25, 1.0])
    assert points["rows"] == [4.0, 2.0]


def test_adoption_line() -> None:
    assert adoption([0.85, 0.95], [0.70, 0.80]).startswith("yes")
    assert adoption([0.60, 0.70], [0.75, 0.90]).startswith("no:")
    assert adoption([0.70, 0.90], [0.75, 0.95]).startswith("not shown")
    assert adoption([0.70, 0.90], None).startswith("no local-only")


def test_report_shows_reliability_and_warnings(run_dir: Path) -> None:  # noqa: F811
    """report.html (fixture of tests/unit/test_report.py: 80 test rows per hospital, under 100 events)."""
    page = write_report(run_dir, final=final_eval()).read_text()
    image = imread(run_dir / "report" / "reliability.png")
    assert image.shape[0] > 300 and image[..., :3].std() > 0.05, "reliability.png is blank"
    assert 'src="report/reliability.png"' in page
    summary = json.loads((run_dir / "summary.json").read_text())
    warned = [*summary["hospitals"].values(), summary["pooled"]]
    assert all(r["warnings"] for r in warned)  # 80 test rows each: fewer than 100 events
    assert page.count('class="clinical-warning"') == sum(len(r["warnings"]) for r in warned)
    for name in final_eval():
        low, high = summary["hospitals"][name]["auc-ci"]
        assert f"{low:.3f}&ndash;{high:.3f}" in page
