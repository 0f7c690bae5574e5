"""Turn a validated hospital table into model features.

Two pipelines:
- ``project``: impossible zeros and ``?`` are missing; numeric fields are imputed with the
  global mean and standardised with the global statistics (federated, see :mod:`fedheart.stats`);
  categorical fields are one-hot over one global category list; missing indicators are added
  for every field that is missing anywhere in the federation.
- ``flamby``: FLamby Fed-Heart-Disease exactly: drop slope/ca/thal, keep complete rows, one-hot
  ``cp`` and ``restecg`` with the first category dropped (13 features), standardise with the
  hospital's own training mean and std (ddof=1, +1e-9).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fedheart.stats import CATEGORICAL, NUMERIC, GlobalStats, clean

FLAMBY_NUMERIC: tuple[str, ...] = ("age", "sex", "trestbps", "chol", "fbs", "thalach", "exang", "oldpeak")
FLAMBY_DUMMIES: dict[str, tuple[int, ...]] = {"cp": (2, 3, 4), "restecg": (1, 2)}
FLAMBY_COLUMNS: tuple[str, ...] = FLAMBY_NUMERIC + tuple(FLAMBY_DUMMIES)


@dataclass
class Preprocessor:
    """A fitted, serialisable feature transform (the same one on every hospital)."""

    pipeline: str
    feature_names: list[str]
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    categories: dict[str, list[int]] = field(default_factory=dict)
    indicators: list[str] = field(default_factory=list)

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Features as a float32 matrix, one row per table row."""
        if self.pipeline == "flamby":
            return self._transform_flamby(frame)
        data = clean(frame)
        columns: list[np.ndarray] = []
        for col in NUMERIC:
            values = data[col].to_numpy(dtype=float)
            filled = np.where(np.isnan(values), self.mean[col], values)
            columns.append((filled - self.mean[col]) / self.std[col])
        for col, cats in self.categories.items():
            values = data[col].to_numpy(dtype=float)
            columns += [(values == c).astype(float) for c in cats]
        columns += [data[col].isna().to_numpy(dtype=float) for col in self.indicators]
        return np.column_stack(columns).astype(np.float32)

    def _flamby_raw(self, frame: pd.DataFrame) -> np.ndarray:
        cols = [frame[c].to_numpy(dtype=float) for c in FLAMBY_NUMERIC]
        for col, cats in FLAMBY_DUMMIES.items():
            cols += [(frame[col].to_numpy(dtype=float) == c).astype(float) for c in cats]
        return np.column_stack(cols)

    def _transform_flamby(self, frame: pd.DataFrame) -> np.ndarray:
        raw = self._flamby_raw(frame)
        mean = np.array([self.mean[f] for f in self.feature_names])
        std = np.array([self.std[f] for f in self.feature_names])
        return ((raw - mean) / (std + 1e-9)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"pipeline": self.pipeline, "feature_names": self.feature_names, "mean": self.mean,
                "std": self.std, "categories": self.categories, "indicators": self.indicators}

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessor:
        return cls(**data)


def project_preprocessor(stats: GlobalStats) -> Preprocessor:
    """The project pipeline, fitted from federated global statistics."""
    indicators = [c for c in (*NUMERIC, *CATEGORICAL) if stats.missing_rate[c] > 0]
    names = list(NUMERIC)
    names += [f"{col}={c}" for col, cats in stats.categories.items() for c in cats]
    names += [f"{col}_missing" for col in indicators]
    return Preprocessor("project", names, dict(stats.mean), dict(stats.std),
                        {k: list(v) for k, v in stats.categories.items()}, indicators)


def flamby_complete(frame: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the rows FLamby keeps (no missing value outside slope, ca, thal)."""
    return frame[[*FLAMBY_COLUMNS, "num"]].notna().all(axis=1).to_numpy()


def flamby_preprocessor(train: pd.DataFrame) -> Preprocessor:
    """FLamby's per-hospital standardisation, fitted on the hospital's own training rows."""
    names = list(FLAMBY_NUMERIC) + [f"{col}={c}" for col, cats in FLAMBY_DUMMIES.items() for c in cats]
    pre = Preprocessor("flamby", names)
    raw = pre._flamby_raw(train)
    std = raw.std(axis=0, ddof=1) if len(raw) > 1 else np.zeros(raw.shape[1])
    pre.mean = dict(zip(names, raw.mean(axis=0).tolist(), strict=True))
    pre.std = dict(zip(names, np.nan_to_num(std).tolist(), strict=True))
    return pre
