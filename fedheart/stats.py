"""Sufficient statistics for federated preprocessing: counts, sums, sums of squares, category counts.

A hospital computes :func:`local_stats` on its training rows and sends only these numbers;
the server adds them up (:func:`combine`) and derives the global means, standard deviations and
missing rates (:class:`GlobalStats`), which every hospital then uses. Equal to the pooled values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from fedheart.schema import FIELDS, IMPOSSIBLE_ZEROS
from fedheart.tables import REQUIRED

NUMERIC: tuple[str, ...] = ("age", "sex", "trestbps", "chol", "fbs", "thalach", "exang", "oldpeak")
CATEGORICAL: dict[str, tuple[int, ...]] = {
    name: tuple(int(v) for v in FIELDS[name].allowed or ())
    for name in ("cp", "restecg", "slope", "ca", "thal")
}


def clean(frame: pd.DataFrame) -> pd.DataFrame:
    """Mark impossible zeros (chol = 0, trestbps = 0) as missing; returns a copy."""
    out = frame.copy()
    for col in IMPOSSIBLE_ZEROS:
        out.loc[out[col] == 0, col] = np.nan
    return out


def stat_keys() -> list[str]:
    """The flat, ordered list of statistic names a hospital reports."""
    keys = ["n"]
    for col in NUMERIC:
        keys += [f"count/{col}", f"sum/{col}", f"sumsq/{col}"]
    for col, cats in CATEGORICAL.items():
        keys += [f"cat/{col}/{c}" for c in cats]
    return keys


def local_stats(frame: pd.DataFrame) -> dict[str, float]:
    """Sufficient statistics of one hospital's (training) rows; no row leaves this function."""
    data = clean(frame)
    out: dict[str, float] = {"n": float(len(data))}
    for col in NUMERIC:
        values = data[col].dropna().to_numpy(dtype=float)
        out[f"count/{col}"] = float(values.size)
        out[f"sum/{col}"] = float(values.sum())
        out[f"sumsq/{col}"] = float(np.square(values).sum())
    for col, cats in CATEGORICAL.items():
        for c in cats:
            out[f"cat/{col}/{c}"] = float((data[col] == c).sum())
    return out


def combine(parts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Add up the statistics of several hospitals, key by key."""
    keys = stat_keys()
    total = dict.fromkeys(keys, 0.0)
    for part in parts:
        missing = [k for k in keys if k not in part]
        if missing:
            raise ValueError(f"statistics are missing keys: {', '.join(missing[:5])}")
        for k in keys:
            total[k] += float(part[k])
    return total


# A noisy estimate is used only if its standard error (in units of the field's range) is below these.
MAX_MEAN_ERROR = 0.05  # mean: 5 % of the range
MAX_VAR_RELATIVE_ERROR = 0.5  # variance: half of the estimate


def _denoised(col: str, count: float, mean: float, var: float, noise_std: float) -> tuple[float, float]:
    """(mean, variance) of a field from noisy sums, or the schema's public defaults where too noisy."""
    low, high = float(FIELDS[col].low), float(FIELDS[col].high)
    width = high - low
    error = noise_std / count if count >= 1 else math.inf  # standard error of a mean of [0, 1] values
    mean_u = (mean - low) / width
    var_u = var / width**2
    mean_u = min(max(mean_u, 0.0), 1.0) if error <= MAX_MEAN_ERROR else 0.5
    var_u = min(max(var_u, 1 / 40**2), 1 / 4) if 0 < error <= MAX_VAR_RELATIVE_ERROR * var_u else 1 / 16
    return low + width * mean_u, var_u * width**2


PUBLIC_MISSING = 0.01  # DP statistics: the least missing rate of a field the schema allows to be missing


@dataclass(frozen=True)
class GlobalStats:
    """What every hospital needs to preprocess identically: derived from summed statistics."""

    n: float
    mean: dict[str, float]
    std: dict[str, float]
    missing_rate: dict[str, float]
    categories: dict[str, list[int]]

    @classmethod
    def from_totals(cls, totals: Mapping[str, float], noise_std: float = 0.0) -> GlobalStats:
        """Global statistics from summed ones.

        ``noise_std``: standard deviation of the Gaussian noise on every summed statistic of the
        fields scaled to [0, 1] by their schema range (the DP release of
        :mod:`fedheart.privacy.stats_dp`; 0 for exact sums). Counts may then be negative; a mean or
        standard deviation whose noise is too large to be informative is replaced by a public
        default from the schema (mid-range, range / 4), and the others are kept inside the range.
        """
        n = max(float(totals["n"]), 1.0)
        mean, std, missing = {}, {}, {}
        for col in NUMERIC:
            count = max(float(totals[f"count/{col}"]), 0.0)
            m = float(totals[f"sum/{col}"]) / count if count >= 1 else 0.0
            var = float(totals[f"sumsq/{col}"]) / count - m * m if count >= 1 else 1.0
            if noise_std > 0:
                m, var = _denoised(col, count, m, var, noise_std)
            mean[col] = m
            std[col] = math.sqrt(var) if var > 1e-12 else 1.0
            missing[col] = min(max(1.0 - count / n, 0.0), 1.0)
        for col, cats in CATEGORICAL.items():
            seen = sum(max(float(totals[f"cat/{col}/{c}"]), 0.0) for c in cats)
            missing[col] = min(max(1.0 - seen / n, 0.0), 1.0)
        if noise_std > 0:  # noisy counts would pick the missing indicators at random: the schema decides
            missing = {col: 0.0 if col in REQUIRED else max(rate, PUBLIC_MISSING) for col, rate in missing.items()}
        return cls(n=float(totals["n"]), mean=mean, std=std, missing_rate=missing,
                   categories={col: list(cats) for col, cats in CATEGORICAL.items()})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GlobalStats:
        return cls(**json.loads(text))
