"""What the hospitals and the aggregator log: parameter and metric names, from the run's numbers.

Metric names follow SageMaker's ``Category:Name`` style; every metric is logged with step = round.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from fedheart.tracking.base import Param

if TYPE_CHECKING:
    from fedheart.config_schema import AppConfig

TRAIN_METRICS = {"train-loss": "Training:Loss", "epsilon": "Privacy:Epsilon"}
EVAL_METRICS = {"auc": "Validation:AUC", "accuracy": "Validation:Accuracy", "loss": "Validation:Loss"}
AGGREGATOR_METRICS = {"pooled-auc": "Test:AUC", "loss": "Test:Loss", "mean-accuracy": "Test:Accuracy",
                      "mean-auc": "Test:MeanAUC", "train-loss": "Training:Loss", "epsilon": "Privacy:Epsilon"}


def _param(value: Any) -> Param:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, int | float | str):
        return value
    return json.dumps(value, sort_keys=True)


def run_params(cfg: AppConfig) -> dict[str, Param]:
    """Settings shared by every run of a federation (the server sends them to the hospitals)."""
    t = cfg.train
    params: dict[str, Any] = {
        "strategy": cfg.strategy.name, "rounds": cfg.rounds, "model": cfg.model.name,
        "protocol": cfg.protocol, "pipeline": cfg.data.pipeline, "seed": cfg.seed,
        "learning-rate": t.lr, "batch-size": t.batch_size, "optimizer": t.optimizer,
        "weight-decay": t.weight_decay, "momentum": t.momentum, "local-steps": t.local_steps,
        "local-epochs": t.local_epochs,
    }
    params |= {f"strategy.{k}": v for k, v in cfg.strategy.params.items()}
    params |= {f"privacy.{k}": v for k, v in asdict(cfg.privacy).items()}
    return {k: _param(v) for k, v in params.items()}


def hospital_params(shared: Mapping[str, Param], hospital: str, train_rows: int, device: str) -> dict[str, Param]:
    return {**shared, "hospital": hospital, "train-rows": train_rows, "device": device}


def aggregator_params(cfg: AppConfig, train_rows: Mapping[str, int]) -> dict[str, Param]:
    """The shared settings plus the hospitals and their training rows (aggregation runs on the CPU)."""
    return {**run_params(cfg), "hospitals": ",".join(sorted(train_rows)), "train-rows": sum(train_rows.values()),
            "device": "cpu"}


def _renamed(metrics: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, float]:
    return {names[k]: float(v) for k, v in metrics.items() if k in names and isinstance(v, int | float)}


def hospital_train_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``Training:Loss`` and, with differential privacy, ``Privacy:Epsilon`` of a train reply."""
    return _renamed(metrics, TRAIN_METRICS)


def hospital_eval_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``Validation:AUC``, ``Validation:Accuracy`` and ``Validation:Loss`` of an evaluate reply."""
    return _renamed(metrics, EVAL_METRICS)


def aggregator_metrics(federation: Mapping[str, Any], train_rows: list[Mapping[str, Any]]) -> dict[str, float]:
    """Pooled-test AUC and loss, mean accuracy, mean train loss; epsilon spent if any.

    Epsilon is the federation row's (the server's round epsilon) or else the largest a hospital reported.
    """
    out = _renamed(federation, AGGREGATOR_METRICS)
    epsilons = [float(r["epsilon"]) for r in train_rows if isinstance(r.get("epsilon"), int | float)
                and math.isfinite(float(r["epsilon"]))]
    if epsilons and "Privacy:Epsilon" not in out:
        out["Privacy:Epsilon"] = max(epsilons)
    return out
