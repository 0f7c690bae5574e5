"""The configuration's typed schema: one dataclass per ``conf/`` group (plain Python, no Hydra).

:mod:`fedheart.config` composes ``conf/`` into :class:`AppConfig`; :mod:`fedheart.config_checks` checks the
values. Modules that only need the types (tracking, hospital) import this one and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedheart.schema import HOSPITALS
from fedheart.sources import UCI_BASE_URL
from fedheart.specs import ModelSpec


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
class PersonalizationConfig:
    """A personal model at each hospital (``fedheart.personal``): ``none``, ``finetune``, ``fedper``,
    ``ditto`` or ``fenda``; the hospital's own parts never leave it."""

    name: str = "none"
    steps: int = 0  # finetune: steps after the last round; ditto: personal steps per round (0: train's)
    lr: float = 0.0  # personal training's learning rate (0: train.lr)
    lam: float = 0.1  # ditto: pull towards the global model
    validation: float = 0.0  # finetune: share of a hospital's training rows that checks the fine-tuning (0: off)


@dataclass
class OutputConfig:
    root: str = "outputs"
    run_name: str | None = None


@dataclass
class AppConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSpec = field(default_factory=ModelSpec)  # conf/model/<name>.yaml: fedheart.models
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    personalization: PersonalizationConfig = field(default_factory=PersonalizationConfig)
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
