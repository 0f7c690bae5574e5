"""Range and consistency checks of a composed configuration that a type schema cannot express."""

from __future__ import annotations

from fedheart.config_schema import AppConfig, ConfigError, TrackingConfig
from fedheart.models import ModelSpecError, resolve
from fedheart.personal import LOCAL_PARTS, METHODS
from fedheart.schema import HOSPITALS
from fedheart.specs import OPTIMIZERS
from fedheart.tracking import BACKENDS
from fedheart.tracking.names import TrackingNameError, check_prefix

PIPELINES = ("project", "flamby")


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
    _check_train_fraction(cfg)
    bad = [h for h in cfg.data.hospitals if h not in known]
    _require(not bad, "data.hospitals", f"unknown hospital(s) {bad}; known: {', '.join(known)}")
    _check_holdout(cfg)
    try:
        resolve(cfg.model)  # the model's own parameters: fedheart.models
    except ModelSpecError as exc:
        raise ConfigError(str(exc)) from None
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
    check_personalization(cfg)


def check_personalization(cfg: AppConfig) -> None:
    """A personalisation method the model, strategy and privacy mode can carry."""
    p = cfg.personalization
    _require(p.name in METHODS, "personalization.name", f"must be one of {', '.join(METHODS)}, got {p.name!r}")
    _require(p.steps >= 0, "personalization.steps", f"must be >= 0 (0: train's steps), got {p.steps}")
    _require(p.lr >= 0, "personalization.lr", f"must be >= 0 (0: train.lr), got {p.lr}")
    _require(p.lam >= 0, "personalization.lam", f"must be >= 0, got {p.lam}")
    _require(0 <= p.validation < 1, "personalization.validation", f"must be in [0, 1), got {p.validation}")
    _require(p.validation == 0 or cfg.privacy.mode == "none", "personalization.validation",
             "choosing between the fine-tuned and the global model on training rows is a release outside the "
             "privacy budget: use 0 with privacy.mode=" + cfg.privacy.mode)
    if p.name not in LOCAL_PARTS:
        return
    kind, _ = resolve(cfg.model)
    _require(kind.name == "mlp", "model.name", f"personalization={p.name} keeps the model's head at each hospital "
             f"and shares its body: it needs a model with hidden layers (model=mlp), got {cfg.model.name!r}")
    _require(cfg.strategy.name in ("fedavg", "fedprox"), "strategy.name",
             f"personalization={p.name}: the replies carry the shared layers only, which {cfg.strategy.name}'s "
             "server optimiser cannot take; use fedavg or fedprox")
    _require(cfg.privacy.mode not in CENTRAL_MODES, "privacy.mode",
             f"personalization={p.name}: central DP clips and noises whole-model updates; use privacy=dp-sgd")


def _check_train_fraction(cfg: AppConfig) -> None:
    """``data.train_fraction``: each hospital's share of training rows, in (0, 1]; 1.0 only with ``data.holdout``."""
    f = cfg.data.train_fraction
    _require(0.0 < f <= 1.0, "data.train_fraction",
             f"must be in (0, 1]: the share of each hospital's rows it trains on (the rest are its test rows; "
             f"1.0: all its rows, only with data.holdout), got {f}")
    _require(f < 1.0 or cfg.data.holdout is not None, "data.train_fraction",
             "1.0 leaves no hospital a test row: use it with data.holdout=<hospital> (the held-out hospital "
             "validates on all its rows), or a fraction below 1 (default 0.66)")


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
