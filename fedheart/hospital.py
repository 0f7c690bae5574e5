"""One hospital's side of the work: its data, statistics, local training and evaluation.

This is what a ClientApp calls; it knows nothing of Flower. Only weights, scalar metrics,
sufficient statistics and score histograms are returned -- never rows.
"""

from __future__ import annotations

import functools
import json
import secrets
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedheart import stats as fstats
from fedheart.clinical import validation
from fedheart.histograms import score_histograms
from fedheart.model import build_model, get_weights, set_weights
from fedheart.preprocess import Preprocessor, flamby_complete, flamby_preprocessor, project_preprocessor
from fedheart.schema import hospital
from fedheart.sources import hospital_file
from fedheart.specs import ModelSpec, TrainConfig
from fedheart.splits import Split, split_table
from fedheart.tables import HospitalTable, read_table
from fedheart.training import TensorBatches, evaluate, num_steps, train

if TYPE_CHECKING:  # Opacus is imported only when DP is used: a ClientApp process starts ~3 s faster
    from torch import nn

    from fedheart.config_schema import AppConfig
    from fedheart.privacy.dpsgd import DPSettings
    from fedheart.privacy.ledger import Ledger

Weights = dict[str, np.ndarray]


@dataclass
class HospitalData:
    """A hospital's validated table and its train/test split."""

    name: str
    table: HospitalTable
    split: Split
    pipeline: str
    # The last features() result, keyed by its preprocessing's JSON.
    _features: tuple[str, tuple[np.ndarray, np.ndarray]] | None = field(default=None, init=False, repr=False,
                                                                         compare=False)

    @property
    def train_frame(self) -> pd.DataFrame:
        return self.table.frame.iloc[self.split.train]

    @property
    def test_frame(self) -> pd.DataFrame:
        return self.table.frame.iloc[self.split.test]

    @property
    def y_train(self) -> np.ndarray:
        return self.table.labels[self.split.train]

    @property
    def y_test(self) -> np.ndarray:
        return self.table.labels[self.split.test]

    def external(self) -> HospitalData:
        """The same hospital with every row a test row (``data.holdout``: external validation); the rows
        its pipeline can use (FLamby's: the complete ones)."""
        rows = (np.flatnonzero(flamby_complete(self.table.frame)) if self.pipeline == "flamby"
                else np.arange(len(self.table.labels)))
        return HospitalData(self.name, self.table, Split(train=np.array([], dtype=int), test=rows), self.pipeline)

    def statistics(self, dp: DPSettings | None = None, ledger: Ledger | None = None,
                   count: bool = False) -> dict[str, float]:
        """Sufficient statistics of the training rows (see :mod:`fedheart.stats`).

        Under DP-SGD (``dp``) they are released with the Gaussian mechanism and the release is
        recorded in ``ledger`` (see :mod:`fedheart.privacy.stats_dp`); ``count``: with a noisy row count.
        """
        if dp is None:
            return fstats.local_stats(self.train_frame)
        if ledger is None:
            raise ValueError("DP statistics need the hospital's privacy ledger")
        from fedheart.privacy.dpsgd import seeds
        from fedheart.privacy.stats_dp import noisy_stats

        rng = np.random.default_rng(seeds(dp, 0, zlib.crc32(self.name.encode()))[1])
        return noisy_stats(self.train_frame, dp.stats_noise_multiplier, ledger, rng, count=count)

    def preprocessor(self, global_stats: fstats.GlobalStats | None) -> Preprocessor:
        """The project pipeline needs the federated statistics; FLamby's is local."""
        if self.pipeline == "flamby":
            return flamby_preprocessor(self.train_frame)
        if global_stats is None:
            raise ValueError("the project pipeline needs the federated preprocessing statistics")
        return project_preprocessor(global_stats)

    def features(self, pre: Preprocessor) -> tuple[np.ndarray, np.ndarray]:
        """(x_train, x_test) under the given preprocessing; callers must not modify them.

        The last result is kept: a hospital serving many messages with the same preprocessing (a
        simulation actor) transforms its rows once instead of on every message.
        """
        key = json.dumps(pre.to_dict(), sort_keys=True)
        if self._features is None or self._features[0] != key:
            self._features = (key, (pre.transform(self.train_frame), pre.transform(self.test_frame)))
        return self._features[1]


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime: float, seed: int, pipeline: str, train_fraction: float,
          name: str) -> HospitalData:
    table = read_table(path)
    split = split_table(table, seed=seed, pipeline=pipeline, train_fraction=train_fraction)
    return HospitalData(name, table, split, pipeline)


def load_hospital(path: str | Path, *, seed: int, pipeline: str, train_fraction: float = 0.66,
                  name: str | None = None) -> HospitalData:
    """Read, validate and split one hospital file (cached while the file is unchanged)."""
    p = Path(path)
    mtime = p.stat().st_mtime if p.exists() else 0.0
    return _load(str(p), mtime, seed, pipeline, train_fraction, name or p.stem)


def configured_hospitals(cfg: AppConfig, *, root: str | Path | None = None,
                         pipeline: str | None = None) -> dict[str, HospitalData]:
    """Each hospital of ``data.hospitals``, by key, as a run would load it in one process (benchmarks):
    its file found by :func:`fedheart.sources.hospital_file` (in $FEDHEART_DATA_DIR if set, else in ``root``
    if given, else ``data.root``; downloaded if ``data.download``), split with ``data.split_seed`` and
    ``data.train_fraction`` under ``data.pipeline`` (or ``pipeline``)."""
    d = cfg.data
    folder = str(root) if root is not None else d.root
    return {key: load_hospital(hospital_file(hospital(key), folder, allow_download=d.download, base_url=d.url),
                               seed=d.split_seed, pipeline=pipeline or d.pipeline, train_fraction=d.train_fraction,
                               name=key)
            for key in d.hospitals}


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(1)[0])


def train_round(data: HospitalData, pre: Preprocessor, weights: Weights, spec: ModelSpec,
                cfg: TrainConfig, *, seed: int, server_round: int, dp: DPSettings | None = None,
                ledger: Ledger | None = None, public_rows: float | None = None) -> tuple[Weights, dict[str, float]]:
    """Train the global model locally for one round; returns new weights and scalar metrics.

    With ``dp`` the round is DP-SGD (Opacus), accounted in ``ledger`` (see :mod:`fedheart.privacy.dpsgd`);
    ``public_rows``: the noisy row count a policy released, used in place of the exact one.
    """
    model = build_model(spec, pre.num_features)
    set_weights(model, weights)
    metrics = fit_model(model, data, pre, cfg, seed=seed, server_round=server_round, dp=dp, ledger=ledger,
                        public_rows=public_rows)
    return get_weights(model), metrics


def fit_model(model: nn.Module, data: HospitalData, pre: Preprocessor, cfg: TrainConfig, *, seed: int,
              server_round: int, dp: DPSettings | None = None, ledger: Ledger | None = None,
              public_rows: float | None = None, stream: int = 0,
              after_step: Callable[[], None] | None = None) -> dict[str, float]:
    """Train ``model`` in place on the hospital's training rows for one round (DP-SGD with ``dp``).

    ``stream``: another batch order for a second model trained in the same round (a personal model);
    ``after_step``: called after every optimiser step (Ditto's pull towards the global model).
    """
    x_train, _ = data.features(pre)
    parts = (seed, zlib.crc32(data.name.encode()), *((stream,) if stream else ()))
    if dp is not None:
        if ledger is None:
            raise ValueError("DP-SGD needs the hospital's privacy ledger")
        from fedheart.privacy.dpsgd import train_private

        return train_private(model, x_train, data.y_train, cfg, dp, ledger, server_round=server_round,
                             seed_parts=parts, public_rows=public_rows, after_step=after_step)
    loader = TensorBatches(x_train, data.y_train, cfg.batch_size, seed=_seed(parts[0], server_round, *parts[1:]))
    result = train(model, loader, cfg, num_steps(cfg, len(x_train)), after_step=after_step)
    return {"train-loss": result.loss, "local-steps": float(result.steps), "num-examples": float(result.num_examples)}


def evaluate_round(data: HospitalData, pre: Preprocessor, weights: Weights, spec: ModelSpec,
                   dp: tuple[float, Ledger] | None = None) -> dict[str, float | list[int]] | dict[str, Any]:
    """Evaluate the global model on the hospital's test rows; aggregate numbers only.

    ``dp``: (noise multiplier, ledger): released through the Gaussian mechanism instead
    (:mod:`fedheart.privacy.eval_dp`; fresh OS randomness), and recorded in the ledger.
    """
    model = build_model(spec, pre.num_features)
    set_weights(model, weights)
    _, x_test = data.features(pre)
    result = evaluate(model, x_test, data.y_test)
    if dp is not None:
        from fedheart.privacy.eval_dp import noisy_evaluation

        return noisy_evaluation(data.y_test, result.scores, dp[0], dp[1], np.random.default_rng(secrets.randbits(128)))
    pos, neg = score_histograms(data.y_test, result.scores)
    return {"loss": result.loss, "auc": result.auc, "accuracy": result.accuracy,
            "num-examples": float(result.num_examples), "hist-pos": pos, "hist-neg": neg,
            **validation(data.y_test, result.scores)}


def majority_baseline(data: HospitalData) -> dict[str, float]:
    """Accuracy of always predicting the hospital's majority training class."""
    majority = int(data.y_train.mean() >= 0.5) if len(data.y_train) else 0
    return {"majority-accuracy": float((data.y_test == majority).mean()) if len(data.y_test) else float("nan")}


def local_only_baseline(data: HospitalData, pre: Preprocessor, initial: Weights, spec: ModelSpec,
                        cfg: TrainConfig, *, rounds: int, seed: int) -> dict[str, float]:
    """Train alone (same model, same total local steps as the federation) and evaluate locally."""
    model = build_model(spec, pre.num_features)
    set_weights(model, initial)
    x_train, x_test = data.features(pre)
    loader = TensorBatches(x_train, data.y_train, cfg.batch_size,
                           seed=_seed(seed, 10_000, zlib.crc32(data.name.encode())))
    local_cfg = TrainConfig(**{**cfg.__dict__, "proximal_mu": 0.0})
    train(model, loader, local_cfg, rounds * num_steps(cfg, len(x_train)))
    result = evaluate(model, x_test, data.y_test)
    clinical = validation(data.y_test, result.scores)
    return {"local-accuracy": result.accuracy, "local-auc": result.auc, "local-loss": result.loss,
            **{f"local-{k}": clinical[k] for k in ("brier", "calibration-slope", "auc-ci-low", "auc-ci-high")}}
