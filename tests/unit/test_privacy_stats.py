"""Preprocessing statistics under DP: bounded rows, Gaussian release, robust global statistics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedheart import stats as fstats
from fedheart.privacy.ledger import Ledger
from fedheart.privacy.stats_dp import DIMENSION, SENSITIVITY, noisy_stats, pooled_noise_std, row_vectors
from fedheart.schema import FIELDS
from fedheart.tables import read_table


@pytest.fixture(scope="module")
def frames(data_dir: Path) -> list[pd.DataFrame]:
    return [read_table(p).frame for p in sorted(data_dir.glob("processed.*.data"))]


def test_every_row_contributes_at_most_the_sensitivity(frames: list[pd.DataFrame]) -> None:
    extreme = frames[0].head(3).copy()
    extreme.loc[:, ["age", "trestbps", "chol", "thalach", "oldpeak"]] = [500, 1e4, -3, 9e9, 77]  # off-range
    for frame in [*frames, extreme]:
        rows = row_vectors(frame)
        assert rows.shape == (len(frame), DIMENSION)
        assert rows.min() >= 0 and rows.max() <= 1
        assert np.linalg.norm(rows, axis=1).max() <= SENSITIVITY + 1e-12


def test_release_has_local_stats_keys_and_is_recorded(frames: list[pd.DataFrame]) -> None:
    ledger = Ledger()
    noisy = noisy_stats(frames[0], 20.0, ledger, np.random.default_rng(0))
    exact = fstats.local_stats(frames[0])
    assert list(noisy) == list(exact) == fstats.stat_keys()
    assert noisy["n"] == exact["n"]  # the row count is public in this design
    assert ledger.history == [(20.0, 1.0, 1)]
    assert noisy != exact


def test_tiny_noise_gives_back_the_exact_statistics(frames: list[pd.DataFrame]) -> None:
    for frame in frames:
        noisy = noisy_stats(frame, 1e-9, Ledger(), np.random.default_rng(1))
        exact = fstats.local_stats(frame)
        for key, value in exact.items():
            assert noisy[key] == pytest.approx(value, rel=1e-6, abs=0.1), key  # sumsq: noise x range**2


def test_noise_has_the_gaussian_mechanism_scale(frames: list[pd.DataFrame]) -> None:
    rng = np.random.default_rng(2)
    draws = np.array([noisy_stats(frames[1], 2.0, Ledger(), rng)["count/age"] for _ in range(400)])
    assert draws.std() == pytest.approx(2.0 * SENSITIVITY, rel=0.15)
    assert draws.mean() == pytest.approx(len(frames[1]), abs=4 * 2.0 * SENSITIVITY / 20)


def test_global_stats_from_noisy_totals_stay_usable() -> None:
    totals = dict.fromkeys(fstats.stat_keys(), -50.0)
    totals["n"] = 600.0
    g = fstats.GlobalStats.from_totals(totals, noise_std=pooled_noise_std(20.0, 4, count=False))
    for col in fstats.NUMERIC:
        low, high = FIELDS[col].low, FIELDS[col].high
        assert g.mean[col] == pytest.approx((low + high) / 2)  # public default: the estimate is noise
        assert g.std[col] == pytest.approx((high - low) / 4)
    assert all(0.0 <= v <= 1.0 for v in g.missing_rate.values())


def test_informative_noisy_estimates_are_kept_and_exact_sums_unchanged(frames: list[pd.DataFrame]) -> None:
    pooled = pd.concat(frames)
    exact_totals = fstats.local_stats(pooled)
    exact = fstats.GlobalStats.from_totals(exact_totals)
    assert fstats.GlobalStats.from_totals(exact_totals, noise_std=0.0) == exact
    # a very large federation would make the same release informative: small noise relative to counts
    big = {k: v * 1000 for k, v in exact_totals.items()}
    g = fstats.GlobalStats.from_totals(big, noise_std=pooled_noise_std(20.0, 4, count=False))
    for col in fstats.NUMERIC:
        assert g.mean[col] == pytest.approx(exact.mean[col], rel=1e-9)
        assert math.isclose(g.std[col], exact.std[col], rel_tol=1e-9) or g.std[col] == pytest.approx(
            (FIELDS[col].high - FIELDS[col].low) / 40)
