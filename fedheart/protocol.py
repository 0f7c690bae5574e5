"""What the server tells a hospital each round, as flat key/value pairs.

Both apps use these functions so the names stay in one place; the apps wrap the dicts in
Flower records. Values are scalars or strings only (Flower ``ConfigRecord`` compatible).
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

from fedheart.config import CENTRAL_MODES, AppConfig, train_config
from fedheart.personal import PersonalSettings
from fedheart.specs import ModelSpec, TrainConfig
from fedheart.tracking import tracking_settings

if TYPE_CHECKING:  # Opacus only when DP-SGD is on (see parse_privacy)
    from fedheart.privacy.dpsgd import DPSettings

Scalar = int | float | str | bool
# Central DP: the reply metric every hospital sets to 1 so that FedAvg weighs hospitals equally
# (the noise sigma = z * C / hospitals and Flower's accountant assume it).
EQUAL_WEIGHT = "dp-weight"


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
        "holdout": cfg.data.holdout or "",
        "seed": cfg.seed,
        "rounds": cfg.rounds,
        "model": json.dumps(cfg.model.to_dict()),
        **personalization_settings(cfg),
        "preprocessing": preprocessing,
        **(tracking_settings(cfg, experiment) if experiment else {}),
        **privacy_settings(cfg),
    }


def personalization_settings(cfg: AppConfig) -> dict[str, Scalar]:
    """The run's personalisation (``fedheart.personal``); nothing for ``none``, so messages stay as they were."""
    p = cfg.personalization
    if p.name == "none":
        return {}
    return PersonalSettings(p.name, p.steps, p.lr, p.lam, p.validation).to_config()  # type: ignore[return-value]


def privacy_settings(cfg: AppConfig, delta: float | None = None) -> dict[str, Scalar]:
    """The privacy mode and what a hospital needs for it; ``delta`` once the server knows the row counts."""
    p = cfg.privacy
    out: dict[str, Scalar] = {"privacy.mode": p.mode}
    if p.mode == "dp-sgd":
        out |= {"privacy.noise-multiplier": p.noise_multiplier or 0.0,  # 0: calibrate to the budget
                "privacy.epsilon": p.epsilon or 0.0,  # 0: no budget
                "privacy.max-grad-norm": p.max_grad_norm, "privacy.rounds": cfg.rounds,
                "privacy.stats-noise-multiplier": p.stats_noise_multiplier,
                "privacy.noise-seed": -1 if p.noise_seed is None else p.noise_seed}
        if delta is not None:
            out["privacy.delta"] = delta
    elif p.mode in CENTRAL_MODES:
        out["privacy.clipping"] = p.clipping
    return out


def parse_privacy(config: dict[str, Any]) -> DPSettings | None:
    """DP-SGD settings from a received config; None unless ``privacy.mode`` is ``dp-sgd``."""
    if str(config.get("privacy.mode", "none")) != "dp-sgd":
        return None
    from fedheart.privacy.dpsgd import DPSettings

    noise, budget, seed = (float(config["privacy.noise-multiplier"]), float(config["privacy.epsilon"]),
                           int(config["privacy.noise-seed"]))
    delta = float(config["privacy.delta"]) if "privacy.delta" in config else None
    return DPSettings(noise_multiplier=noise or None, epsilon=budget or None, delta=delta,
                      max_grad_norm=float(config["privacy.max-grad-norm"]), rounds=int(config["privacy.rounds"]),
                      stats_noise_multiplier=float(config["privacy.stats-noise-multiplier"]),
                      noise_seed=None if seed < 0 else seed)


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
    return ModelSpec.from_dict(json.loads(str(config["model"])))
