"""Hydra configuration: compose ``conf/``, check it against a typed schema, explain errors.

The server composes the configuration once (from the run config's Hydra overrides) and is the
single source of hyperparameters; the hospitals receive what they need in messages.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedheart.model import MODELS
from fedheart.schema import HOSPITALS
from fedheart.training import OPTIMIZERS, TrainConfig

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
PIPELINES = ("project", "flamby")


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names it."""


@dataclass
class DataConfig:
    root: str | None = None
    download: bool = True
    hospitals: list[str] = field(default_factory=lambda: [h.key for h in HOSPITALS])
    pipeline: str = "project"
    split_seed: int = 43
    train_fraction: float = 0.66


@dataclass
class ModelConfig:
    name: str = "logreg"
    hidden: int = 32
    layers: int = 1
    dropout: float = 0.0


@dataclass
class StrategyConfig:
    name: str = "fedavg"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainSection:
    lr: float = 0.05
    local_steps: int = 100
    local_epochs: int = 0
    batch_size: int = 16
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass
class PrivacyConfig:
    mode: str = "none"


@dataclass
class TrackingConfig:
    backend: str = "local"


@dataclass
class OutputConfig:
    root: str = "outputs"
    run_name: str | None = None


@dataclass
class AppConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    train: TrainSection = field(default_factory=TrainSection)
    output: OutputConfig = field(default_factory=OutputConfig)
    protocol: str = "project"
    rounds: int = 15
    seed: int = 0
    min_hospitals: int = 4
    min_replies: int = 2
    round_timeout: float = 600.0
    baselines: bool = True
    resume: str | None = None


def parse_overrides(text: str | list[str] | None) -> list[str]:
    """Hydra overrides from a run-config string (``"strategy=fedprox train.lr=0.01"``)."""
    if not text:
        return []
    return list(text) if isinstance(text, list) else shlex.split(text)


def load_config(overrides: str | list[str] | None = None, conf_dir: Path = CONF_DIR) -> AppConfig:
    """Compose ``conf/`` with overrides, type-check it and check every value; raise ConfigError."""
    items = parse_overrides(overrides)
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            composed = compose(config_name="config", overrides=items)
        typed: DictConfig = OmegaConf.merge(OmegaConf.structured(AppConfig), composed)
    except (HydraException, OmegaConfBaseException) as exc:
        detail = str(exc).split("Config search path")[0].strip()
        raise ConfigError(f"invalid configuration (overrides: {' '.join(items) or 'none'}): "
                          f"{detail}") from None
    cfg: AppConfig = OmegaConf.to_object(typed)  # type: ignore[assignment]
    check_config(cfg)
    return cfg


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"invalid value for '{key}': {message}")


def check_config(cfg: AppConfig) -> None:
    """Range and consistency checks that a type schema cannot express."""
    known = [h.key for h in HOSPITALS]
    _require(cfg.rounds >= 1, "rounds", f"must be >= 1, got {cfg.rounds}")
    _require(cfg.min_hospitals >= 1, "min_hospitals", f"must be >= 1, got {cfg.min_hospitals}")
    _require(1 <= cfg.min_replies <= cfg.min_hospitals, "min_replies",
             f"must be between 1 and min_hospitals ({cfg.min_hospitals}), got {cfg.min_replies}")
    _require(cfg.round_timeout > 0, "round_timeout", f"must be > 0, got {cfg.round_timeout}")
    _require(cfg.data.pipeline in PIPELINES, "data.pipeline",
             f"must be one of {', '.join(PIPELINES)}, got {cfg.data.pipeline!r}")
    _require(0.0 < cfg.data.train_fraction < 1.0, "data.train_fraction",
             f"must be between 0 and 1, got {cfg.data.train_fraction}")
    bad = [h for h in cfg.data.hospitals if h not in known]
    _require(not bad, "data.hospitals", f"unknown hospital(s) {bad}; known: {', '.join(known)}")
    _require(cfg.model.name in MODELS, "model.name", f"must be one of {', '.join(MODELS)}, got {cfg.model.name!r}")
    _require(cfg.model.hidden >= 1, "model.hidden", f"must be >= 1, got {cfg.model.hidden}")
    _require(cfg.model.layers >= 1, "model.layers", f"must be >= 1, got {cfg.model.layers}")
    _require(0.0 <= cfg.model.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {cfg.model.dropout}")
    t = cfg.train
    _require(t.lr > 0, "train.lr", f"must be > 0, got {t.lr}")
    _require(t.local_steps >= 1 or t.local_epochs >= 1, "train.local_steps",
             "one of train.local_steps and train.local_epochs must be >= 1")
    _require(t.local_epochs >= 0, "train.local_epochs", f"must be >= 0, got {t.local_epochs}")
    _require(t.batch_size >= 1, "train.batch_size", f"must be >= 1, got {t.batch_size}")
    _require(t.optimizer in OPTIMIZERS, "train.optimizer",
             f"must be one of {', '.join(OPTIMIZERS)}, got {t.optimizer!r}")
    _require(t.momentum >= 0, "train.momentum", f"must be >= 0, got {t.momentum}")
    _require(t.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {t.weight_decay}")


def train_config(cfg: AppConfig, proximal_mu: float = 0.0) -> TrainConfig:
    """The per-round training settings a hospital receives."""
    t = cfg.train
    return TrainConfig(lr=t.lr, local_steps=t.local_steps, local_epochs=t.local_epochs,
                       batch_size=t.batch_size, optimizer=t.optimizer, momentum=t.momentum,
                       weight_decay=t.weight_decay, proximal_mu=proximal_mu)


def to_yaml(cfg: AppConfig) -> str:
    """The resolved configuration as YAML (saved in every run folder)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
