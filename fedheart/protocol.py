"""What the server tells a hospital each round, as flat key/value pairs.

Both apps use these functions so the names stay in one place; the apps wrap the dicts in
Flower records. Values are scalars or strings only (Flower ``ConfigRecord`` compatible).
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

from fedheart.config import AppConfig, train_config
from fedheart.hospital import ModelSpec
from fedheart.tracking import tracking_settings
from fedheart.training import TrainConfig

Scalar = int | float | str | bool


def task_settings(cfg: AppConfig, preprocessing: str = "", experiment: str = "") -> dict[str, Scalar]:
    """Data, split, model and tracking settings every message carries (no hyperparameters live on clients).

    ``experiment``: the run's tracking experiment, decided once by the server (empty: not tracked yet).
    """
    return {
        "pipeline": cfg.data.pipeline,
        "split-seed": cfg.data.split_seed,
        "train-fraction": cfg.data.train_fraction,
        "data-root": cfg.data.root or "",
        "data-download": cfg.data.download,
        "data-url": cfg.data.url,
        "hospitals": ",".join(cfg.data.hospitals),
        "partition-dir": cfg.data.partition_dir or "",
        "seed": cfg.seed,
        "model": json.dumps(asdict(ModelSpec(cfg.model.name, cfg.model.hidden, cfg.model.layers,
                                             cfg.model.dropout))),
        "preprocessing": preprocessing,
        **(tracking_settings(cfg, experiment) if experiment else {}),
    }


def train_settings(cfg: AppConfig) -> dict[str, Scalar]:
    """The round's training configuration (``proximal-mu`` is added by FedProx itself)."""
    t = train_config(cfg)
    return {f"train.{k}": v for k, v in asdict(t).items() if k != "proximal_mu"}


def parse_train(config: dict[str, Any]) -> TrainConfig:
    """TrainConfig from a received config (strategy keys such as ``proximal-mu`` included)."""
    values: dict[str, Any] = {}
    for f in fields(TrainConfig):
        key = f"train.{f.name}"
        if key in config:
            values[f.name] = type(getattr(TrainConfig(), f.name))(config[key])
    values["proximal_mu"] = float(config.get("proximal-mu", 0.0))
    return TrainConfig(**values)


def parse_model(config: dict[str, Any]) -> ModelSpec:
    return ModelSpec(**json.loads(str(config["model"])))
