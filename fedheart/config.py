"""Hydra configuration: compose ``conf/``, check it against a typed schema, explain errors.

The server composes the configuration once (from the run config's Hydra overrides) and is the
single source of hyperparameters; the hospitals receive what they need in messages. The schema is
:mod:`fedheart.config_schema`, the value checks :mod:`fedheart.config_checks`; both are re-exported here.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from fedheart.config_checks import (
    AGGREGATIONS,
    CENTRAL_MODES,
    PIPELINES,
    PRIVACY_MODES,
    SECAGG_MODULUS,
    check_aggregation,
    check_config,
    check_privacy,
)
from fedheart.config_schema import (
    AggregationConfig,
    AppConfig,
    ConfigError,
    DataConfig,
    OutputConfig,
    PrivacyConfig,
    StrategyConfig,
    TrackingConfig,
    TrainSection,
)
from fedheart.specs import ModelSpec, TrainConfig

__all__ = ["AGGREGATIONS", "CENTRAL_MODES", "CONF_DIR", "PIPELINES", "PRIVACY_MODES", "SECAGG_MODULUS",
           "AggregationConfig", "AppConfig", "ConfigError", "DataConfig", "OutputConfig",
           "PrivacyConfig", "StrategyConfig", "TrackingConfig", "TrainSection", "check_aggregation",
           "check_config", "check_privacy", "load_config", "parse_overrides", "to_yaml", "train_config"]

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def parse_overrides(text: str | list[str] | None) -> list[str]:
    """Hydra overrides from a run-config string (``"strategy=fedprox train.lr=0.01"``)."""
    if not text:
        return []
    return list(text) if isinstance(text, list) else shlex.split(text)


def load_config(overrides: str | list[str] | None = None, conf_dir: Path = CONF_DIR) -> AppConfig:
    """Compose ``conf/`` with overrides, type-check it and check every value; raise ConfigError."""
    from hydra import compose, initialize_config_dir  # here: hospitals import this module, never Hydra
    from hydra.errors import HydraException
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    items = parse_overrides(overrides)
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            composed = compose(config_name="config", overrides=items)
        raw: Any = OmegaConf.to_container(composed, resolve=True)
        raw["model"] = ModelSpec.from_dict(raw.get("model") or {}).__dict__  # {name, params}: the model's own keys
        schema = OmegaConf.structured(AppConfig)
        OmegaConf.set_readonly(schema.model, False)  # ModelSpec is frozen: a value once composed
        typed: DictConfig = OmegaConf.merge(schema, raw)
    except (HydraException, OmegaConfBaseException) as exc:
        detail = str(exc).split("Config search path")[0].strip()
        raise ConfigError(f"invalid configuration (overrides: {' '.join(items) or 'none'}): "
                          f"{detail}") from None
    cfg: AppConfig = OmegaConf.to_object(typed)  # type: ignore[assignment]
    check_config(cfg)
    return cfg


def train_config(cfg: AppConfig, proximal_mu: float = 0.0) -> TrainConfig:
    """The per-round training settings a hospital receives."""
    t = cfg.train
    return TrainConfig(lr=t.lr, local_steps=t.local_steps, local_epochs=t.local_epochs,
                       batch_size=t.batch_size, optimizer=t.optimizer, momentum=t.momentum,
                       weight_decay=t.weight_decay, proximal_mu=proximal_mu)


def to_yaml(cfg: AppConfig) -> str:
    """The resolved configuration as YAML (saved in every run folder)."""
    from omegaconf import OmegaConf

    data: Any = OmegaConf.to_container(OmegaConf.structured(cfg))
    data["model"] = cfg.model.to_dict()  # as conf/model/<name>.yaml writes it
    return OmegaConf.to_yaml(data)
