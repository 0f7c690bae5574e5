"""Hydra configuration: compose ``conf/``, check it against a typed schema, explain errors.

The server composes the configuration once (from the run config's Hydra overrides) and is the
single source of hyperparameters; the hospitals receive what they need in messages.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedheart.schema import HOSPITALS
from fedheart.sources import UCI_BASE_URL
from fedheart.specs import MODELS, OPTIMIZERS, TrainConfig
from fedheart.tracking import BACKENDS
from fedheart.tracking.names import TrackingNameError, check_prefix

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
PIPELINES = ("project", "flamby")


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names it."""


@dataclass
class DataConfig:
    root: str | None = None
    download: bool = True
    url: str = UCI_BASE_URL
    hospitals: list[str] = field(default_factory=lambda: [h.key for h in HOSPITALS])
    partition_dir: str | None = None  # simulation: partition i reads the i-th file here (sorted); see sources
    pipeline: str = "project"
    split_seed: int = 43
    train_fraction: float = 0.66
    holdout: str | None = None  # a hospital that only evaluates, on all its rows: external validation


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
    """Differential privacy (see docs/privacy.md): ``none``; ``dp-sgd`` (record-level, per hospital,
    Opacus); ``central-fixed`` / ``central-adaptive`` (hospital-level, Flower's strategy wrappers)."""

    mode: str = "none"
    epsilon: float | None = None  # dp-sgd: each hospital's budget for the run; central-fixed: the server's
    delta: float | None = None  # null: dp-sgd 1e-5 (or 0.1 / smallest hospital's rows); central 0.1 / min_hospitals
    noise_multiplier: float | None = None  # dp-sgd: null = calibrate to spend epsilon over the run
    max_grad_norm: float = 1.0  # dp-sgd: per-sample gradient clipping norm
    stats_noise_multiplier: float = 20.0  # dp-sgd: noise of the preprocessing statistics / their sensitivity
    noise_seed: int | None = None  # reproducible noise for experiments only; null = fresh OS randomness
    clipping: str = "server"  # central: where hospital updates are clipped (server | client)
    clipping_norm: float = 1.0  # central-fixed: the norm; central-adaptive: the initial norm
    target_clipped_quantile: float = 0.5  # central-adaptive
    clip_norm_lr: float = 0.2  # central-adaptive
    clipped_count_stddev: float | None = None  # central-adaptive; null: Flower's default (hospitals / 20)


@dataclass
class AggregationConfig:
    """How the server combines updates: ``plain`` FedAvg family, or Flower's SecAgg+ (``secagg``)."""

    mode: str = "plain"
    num_shares: int = 5  # SecAgg+: neighbours sharing each hospital's secrets (> 2; odd, or >= hospitals)
    reconstruction_threshold: int = 3  # shares that rebuild a secret (>= 2, < num_shares)
    clipping_range: float = 8.0  # every scaled weight must lie in [-clipping_range, clipping_range]
    quantization_range: int = 4194304  # 2**22 levels per weight
    max_weight: float = 1000.0  # an update is scaled by num_examples / max_weight (must be <= 1)
    timeout: float | None = None  # seconds per SecAgg+ stage; None: round_timeout
    max_failed_rounds: int = 0  # rounds whose SecAgg+ may halt before the run fails


@dataclass
class TrackingConfig:
    backend: str = "local"  # local | sagemaker
    experiment_prefix: str = "fed-heart-disease"
    region: str | None = None  # None: the AWS chain (AWS_DEFAULT_REGION, profile...)
    flush_every: int = 1  # the aggregator sends its metrics every N rounds (hospitals: every message)
    timeout: float = 5.0  # seconds to connect / to read, per AWS call
    max_attempts: int = 2  # attempts per AWS call, retries included


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
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
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
    from hydra import compose, initialize_config_dir  # here: hospitals import this module, never Hydra
    from hydra.errors import HydraException
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

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
    _check_holdout(cfg)
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
    _check_tracking(cfg.tracking)
    check_aggregation(cfg)
    check_privacy(cfg)


def _check_holdout(cfg: AppConfig) -> None:
    """``data.holdout``: a hospital of the federation that joins only to evaluate."""
    held = cfg.data.holdout
    if held is None:
        return
    _require(bool(held.strip()), "data.holdout", "must name a hospital or be null")
    _require(cfg.data.partition_dir is not None or held in cfg.data.hospitals, "data.holdout",
             f"{held!r} is not one of data.hospitals ({', '.join(cfg.data.hospitals)})")
    _require(cfg.min_hospitals >= 2, "min_hospitals",
             f"data.holdout needs at least 2 hospitals (one held out, one training), got {cfg.min_hospitals}")
    _require(cfg.min_replies <= cfg.min_hospitals - 1, "min_replies",
             f"with data.holdout only {cfg.min_hospitals - 1} of min_hospitals={cfg.min_hospitals} hospitals train; "
             f"min_replies={cfg.min_replies} can never be met")
    _require(cfg.aggregation.mode == "plain", "aggregation.mode",
             "data.holdout is not supported with aggregation=secagg (SecAgg+ samples every connected hospital)")
    _require(cfg.privacy.mode not in CENTRAL_MODES, "privacy.mode",
             f"data.holdout is not supported with privacy={cfg.privacy.mode}: its noise and accountant assume "
             "that every one of min_hospitals hospitals trains in every round")


def _check_tracking(tr: TrackingConfig) -> None:
    _require(tr.backend in BACKENDS, "tracking.backend", f"must be one of {', '.join(BACKENDS)}, got {tr.backend!r}")
    try:
        check_prefix(tr.experiment_prefix)
    except TrackingNameError as exc:
        raise ConfigError(f"invalid value for 'tracking.experiment_prefix': {exc}") from None
    _require(tr.flush_every >= 1, "tracking.flush_every", f"must be >= 1, got {tr.flush_every}")
    _require(tr.timeout > 0, "tracking.timeout", f"must be > 0, got {tr.timeout}")
    _require(tr.max_attempts >= 1, "tracking.max_attempts", f"must be >= 1, got {tr.max_attempts}")


AGGREGATIONS = ("plain", "secagg")
SECAGG_MODULUS = 2**32  # Flower's SecAgg+ modulus_range: masked sums live modulo this


def check_aggregation(cfg: AppConfig) -> None:
    """SecAgg+ settings that can never work, checked before any hospital is contacted."""
    a = cfg.aggregation
    _require(a.mode in AGGREGATIONS, "aggregation.mode", f"must be one of {', '.join(AGGREGATIONS)}, got {a.mode!r}")
    if a.mode != "secagg":
        return
    _require(cfg.min_hospitals >= 2, "min_hospitals",
             f"secure aggregation needs at least 2 hospitals, got {cfg.min_hospitals}")
    _require(a.num_shares > 2, "aggregation.num_shares", f"must be > 2 (Flower SecAgg+), got {a.num_shares}")
    _require(a.num_shares % 2 == 1 or a.num_shares >= cfg.min_hospitals, "aggregation.num_shares",
             f"must be odd or >= min_hospitals ({cfg.min_hospitals}), got {a.num_shares}: with fewer, Flower 1.42 "
             "gives each hospital num_shares + 1 neighbours but only num_shares shares, and every round fails")
    _require(2 <= a.reconstruction_threshold < a.num_shares, "aggregation.reconstruction_threshold",
             f"must be >= 2 and less than aggregation.num_shares ({a.num_shares}), got {a.reconstruction_threshold}")
    _require(a.reconstruction_threshold <= cfg.min_hospitals, "aggregation.reconstruction_threshold",
             f"{a.reconstruction_threshold} shares can never be collected from min_hospitals={cfg.min_hospitals} "
             "hospitals; lower it or raise min_hospitals")
    _require(a.clipping_range > 0, "aggregation.clipping_range", f"must be > 0, got {a.clipping_range}")
    _require(0 < a.quantization_range < SECAGG_MODULUS, "aggregation.quantization_range",
             f"must be in (0, 2**32), got {a.quantization_range}")
    _require(cfg.min_hospitals * a.quantization_range < SECAGG_MODULUS, "aggregation.quantization_range",
             f"{a.quantization_range} x {cfg.min_hospitals} hospitals (min_hospitals) overflows the SecAgg+ "
             f"modulus 2**32; use at most {(SECAGG_MODULUS - 1) // cfg.min_hospitals}")
    _require(a.max_weight > 0, "aggregation.max_weight", f"must be > 0, got {a.max_weight}")
    _require(a.timeout is None or a.timeout > 0, "aggregation.timeout", f"must be > 0 or null, got {a.timeout}")
    _require(0 <= a.max_failed_rounds < cfg.rounds, "aggregation.max_failed_rounds",
             f"must be >= 0 and less than rounds ({cfg.rounds}), got {a.max_failed_rounds}")


PRIVACY_MODES = ("none", "dp-sgd", "central-fixed", "central-adaptive")
CENTRAL_MODES = ("central-fixed", "central-adaptive")


def check_privacy(cfg: AppConfig) -> None:
    """Privacy settings that are wrong or would make the reported epsilon untrue."""
    p = cfg.privacy
    _require(p.mode in PRIVACY_MODES, "privacy.mode", f"must be one of {', '.join(PRIVACY_MODES)}, got {p.mode!r}")
    if p.mode == "none":
        return
    _require(cfg.resume is None, "resume", f"a run with privacy.mode={p.mode} cannot be resumed: the privacy "
             "accountants live in the run's node and server state and would restart at zero")
    _require(p.epsilon is None or p.epsilon > 0, "privacy.epsilon", f"must be > 0 or null, got {p.epsilon}")
    _require(p.delta is None or 0 < p.delta < 1, "privacy.delta", f"must be in (0, 1) or null, got {p.delta}")
    _require(p.noise_multiplier is None or p.noise_multiplier > 0, "privacy.noise_multiplier",
             f"must be > 0 or null, got {p.noise_multiplier}")
    _require(p.noise_seed is None or p.noise_seed >= 0, "privacy.noise_seed",
             f"must be >= 0 or null, got {p.noise_seed}")
    if p.mode == "dp-sgd":
        _require(p.noise_multiplier is not None or p.epsilon is not None, "privacy.epsilon",
                 "privacy=dp-sgd needs privacy.epsilon (a budget for the whole run) or privacy.noise_multiplier")
        _require(p.max_grad_norm > 0, "privacy.max_grad_norm", f"must be > 0, got {p.max_grad_norm}")
        _require(p.stats_noise_multiplier > 0, "privacy.stats_noise_multiplier",
                 f"must be > 0, got {p.stats_noise_multiplier}")
        _require(cfg.data.pipeline == "project", "data.pipeline",
                 "privacy=dp-sgd needs the project pipeline: the flamby pipeline standardises with each "
                 "hospital's own training mean and std, which DP-SGD does not protect")
        _require(cfg.strategy.name != "fedprox", "strategy.name",
                 "privacy=dp-sgd cannot use fedprox: Opacus noises per-sample gradients of the loss only, "
                 "so FedProx's proximal term would be silently dropped")
        return
    _require(p.noise_multiplier is not None, "privacy.noise_multiplier", f"privacy={p.mode} needs a noise multiplier")
    _require(p.clipping in ("server", "client"), "privacy.clipping", f"must be server or client, got {p.clipping!r}")
    _require(p.clipping_norm > 0, "privacy.clipping_norm", f"must be > 0, got {p.clipping_norm}")
    if cfg.aggregation.mode == "secagg":  # the server only ever sees the sum of the updates
        _require(p.clipping == "client", "privacy.clipping",
                 "aggregation=secagg needs privacy.clipping=client: the server never sees one hospital's "
                 "update, so it cannot clip it")
        _require(p.epsilon is None, "privacy.epsilon",
                 "a server-side epsilon cap cannot stop a SecAgg+ round cleanly; leave privacy.epsilon null")
    fraction = float(cfg.strategy.params.get("fraction_train", 1.0))
    _require(fraction == 1.0, "strategy.params.fraction_train",
             f"central DP noise is calibrated for min_hospitals hospitals in every round; use 1.0, got {fraction}")
    if p.mode == "central-fixed":
        _require(cfg.strategy.name in ("fedavg", "fedprox"), "strategy.name",
                 "privacy=central-fixed accounts epsilon with Flower's RdpAccountant, which needs FedAvg's "
                 f"aggregation (fedavg or fedprox), got {cfg.strategy.name!r}")
        return
    _require(p.epsilon is None, "privacy.epsilon", "privacy=central-adaptive has no accountant in Flower 1.42, so "
             "no epsilon can be reported or enforced; leave privacy.epsilon null")
    _require(0 <= p.target_clipped_quantile <= 1, "privacy.target_clipped_quantile",
             f"must be in [0, 1], got {p.target_clipped_quantile}")
    _require(p.clip_norm_lr > 0, "privacy.clip_norm_lr", f"must be > 0, got {p.clip_norm_lr}")
    _require(p.clipped_count_stddev is None or p.clipped_count_stddev >= 0, "privacy.clipped_count_stddev",
             f"must be >= 0 or null, got {p.clipped_count_stddev}")


def train_config(cfg: AppConfig, proximal_mu: float = 0.0) -> TrainConfig:
    """The per-round training settings a hospital receives."""
    t = cfg.train
    return TrainConfig(lr=t.lr, local_steps=t.local_steps, local_epochs=t.local_epochs,
                       batch_size=t.batch_size, optimizer=t.optimizer, momentum=t.momentum,
                       weight_decay=t.weight_decay, proximal_mu=proximal_mu)


def to_yaml(cfg: AppConfig) -> str:
    """The resolved configuration as YAML (saved in every run folder)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
