"""Build Flower's own strategy classes from the ``strategy/`` config group."""

from __future__ import annotations

import inspect
from typing import Any

from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedProx, FedYogi, Strategy

from fedheart.config import AppConfig, ConfigError
from server_app.privacy import weight_key, wrap_strategy
from server_app.records import aggregate_evaluate_metrics

STRATEGIES: dict[str, type[FedAvg]] = {
    "fedavg": FedAvg, "fedprox": FedProx, "fedadam": FedAdam, "fedadagrad": FedAdagrad, "fedyogi": FedYogi,
}
# Set by the app itself, not by users.
_RESERVED = {"min_available_nodes", "min_train_nodes", "min_evaluate_nodes", "weighted_by_key",
             "arrayrecord_key", "configrecord_key", "train_metrics_aggr_fn", "evaluate_metrics_aggr_fn"}


def build_strategy(cfg: AppConfig) -> Strategy:
    """The configured strategy; unknown names and parameters fail with the key named."""
    name = cfg.strategy.name
    if name not in STRATEGIES:
        raise ConfigError(f"invalid value for 'strategy.name': {name!r}; choose one of {', '.join(STRATEGIES)}")
    cls = STRATEGIES[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"} - _RESERVED
    params: dict[str, Any] = dict(cfg.strategy.params)
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'strategy.params.{k}' for k in unknown)} for "
                          f"{cls.__name__}; accepted: {', '.join(sorted(accepted))}")
    for key in ("fraction_train", "fraction_evaluate"):
        if key in params and not 0.0 < float(params[key]) <= 1.0:
            raise ConfigError(f"invalid value for 'strategy.params.{key}': must be in (0, 1], got {params[key]}")
    strategy = cls(min_available_nodes=cfg.min_hospitals, min_train_nodes=cfg.min_replies,
                   min_evaluate_nodes=cfg.min_replies, evaluate_metrics_aggr_fn=aggregate_evaluate_metrics,
                   weighted_by_key=weight_key(cfg), **params)
    return wrap_strategy(cfg, strategy)  # central DP: Flower's clipping + noise wrapper (server_app.privacy)
