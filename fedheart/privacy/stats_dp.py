"""The preprocessing statistics through the Gaussian mechanism (one release per run).

Each training row becomes a vector with every coordinate in [0, 1]: for each numeric field
``present``, ``u`` and ``u**2`` where ``u`` is the value clipped to the schema range
(:data:`fedheart.schema.FIELDS` low/high) and scaled to [0, 1]; for each categorical field one
indicator per category. A row's L2 norm is therefore at most ``SENSITIVITY = sqrt(dim)``, which
bounds what adding or removing one row changes in the summed vector. Gaussian noise with standard
deviation ``z * SENSITIVITY`` is added to every summed coordinate; that release costs the RDP
history entry ``(z, 1.0, 1)``. The sums are then mapped back to the raw-unit statistics of
:func:`fedheart.stats.local_stats` (post-processing, free). Without a hospital policy the row count
``n`` is sent exactly (public in that design); under a policy (``count=True``) every row adds one more
coordinate equal to ``COUNT_SCALE``, so ``n`` is a noisy count released in the same mechanism
(sensitivity ``sqrt(dim + COUNT_SCALE**2)``: the count's noise is about ``1.03 z`` rows, the other
sums' about four times larger) and the hospital uses that count wherever it would have used ``n``
(see docs/privacy.md).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fedheart.privacy.ledger import Ledger
from fedheart.schema import FIELDS
from fedheart.stats import CATEGORICAL, NUMERIC, clean

DIMENSION = 3 * len(NUMERIC) + sum(len(c) for c in CATEGORICAL.values())
SENSITIVITY = math.sqrt(DIMENSION)  # every coordinate of a row's vector lies in [0, 1]
COUNT_SCALE = 4 * SENSITIVITY  # a row's weight in the noisy count (count=True)


def row_vectors(frame: pd.DataFrame) -> np.ndarray:
    """One bounded contribution vector per row (see the module docstring)."""
    data = clean(frame)
    columns: list[np.ndarray] = []
    for col in NUMERIC:
        spec = FIELDS[col]
        values = data[col].to_numpy(dtype=float)
        present = ~np.isnan(values)
        u = np.where(present, (np.clip(values, spec.low, spec.high) - spec.low) / (spec.high - spec.low), 0.0)
        columns += [present.astype(float), u, u * u]
    for col, cats in CATEGORICAL.items():
        values = data[col].to_numpy(dtype=float)
        columns += [(values == c).astype(float) for c in cats]
    return np.column_stack(columns) if len(data) else np.zeros((0, DIMENSION))


def noisy_stats(frame: pd.DataFrame, noise_multiplier: float, ledger: Ledger,
                rng: np.random.Generator, count: bool = False) -> dict[str, float]:
    """The keys of :func:`fedheart.stats.local_stats`, released with the Gaussian mechanism.

    ``count``: the row count ``n`` is released noisy in the same mechanism (at least 1) instead of exactly.
    Records the release in ``ledger`` before returning it.
    """
    if noise_multiplier <= 0:
        raise ValueError(f"privacy.stats_noise_multiplier must be > 0, got {noise_multiplier}")
    vectors = row_vectors(frame)
    if count:
        vectors = np.column_stack([vectors, np.full(len(vectors), COUNT_SCALE)])
    sensitivity = math.sqrt(DIMENSION + COUNT_SCALE**2) if count else SENSITIVITY  # max row norm
    noisy = vectors.sum(axis=0) + rng.normal(0.0, noise_multiplier * sensitivity, size=vectors.shape[1])
    ledger.record(noise_multiplier, 1.0, 1)
    out: dict[str, float] = {"n": max(float(noisy[-1]) / COUNT_SCALE, 1.0) if count else float(len(frame))}
    i = 0
    for col in NUMERIC:
        spec = FIELDS[col]
        low, width = float(spec.low), float(spec.high - spec.low)
        count, su, sq = noisy[i:i + 3]
        out[f"count/{col}"] = float(count)
        out[f"sum/{col}"] = float(low * count + width * su)
        out[f"sumsq/{col}"] = float(low * low * count + 2 * low * width * su + width * width * sq)
        i += 3
    for col, cats in CATEGORICAL.items():
        for c in cats:
            out[f"cat/{col}/{c}"] = float(noisy[i])
            i += 1
    return out


def pooled_noise_std(noise_multiplier: float, hospitals: int, count: bool = True) -> float:
    """Noise standard deviation on each statistic summed over ``hospitals`` DP releases ([0, 1] units).

    What :meth:`fedheart.stats.GlobalStats.from_totals` needs to tell informative estimates from noise.
    ``count``: the releases may carry a noisy row count (a hospital policy): the server cannot tell which
    hospitals have one, so it assumes the larger noise (it then falls back to public defaults more often).
    """
    sensitivity = math.sqrt(DIMENSION + COUNT_SCALE**2) if count else SENSITIVITY
    return noise_multiplier * sensitivity * math.sqrt(hospitals)
