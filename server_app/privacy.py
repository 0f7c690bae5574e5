"""Server side of the privacy modes (see docs/privacy.md).

- ``central-fixed`` / ``central-adaptive``: the strategy is wrapped in Flower's
  ``DifferentialPrivacy{Server,Client}Side{Fixed,Adaptive}Clipping``; fixed clipping is accounted
  by Flower's ``RdpAccountant`` (no amplification, equal hospital weights: ``EQUAL_WEIGHT``).
- ``dp-sgd``: the hospitals train with Opacus and account their own epsilon; the server resolves
  delta, leaves hospitals whose budget is spent out of the aggregation, stops the run cleanly
  when too few can train, and logs the largest epsilon spent each round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ConfigRecord, Message
from flwr.serverapp import Grid, NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod
from flwr.serverapp.exception import PrivacyBudgetExhausted
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)

from fedheart.config import CENTRAL_MODES, AppConfig, ConfigError
from fedheart.privacy import EPSILON, EXHAUSTED
from fedheart.privacy.stats_dp import pooled_noise_std
from fedheart.protocol import EQUAL_WEIGHT, Scalar, privacy_settings
from fedheart.safeguard.policy import DEFAULT_DELTA
from server_app.records import metrics_of

log = logging.getLogger("fedheart.server")

DEFAULT_KEY = "num-examples"


class BudgetExhausted(RuntimeError):
    """Too few hospitals (or the server's accountant) can go on within the privacy budget."""


def weight_key(cfg: AppConfig) -> str:
    """The reply metric FedAvg weighs updates by: equal weights under central DP."""
    return EQUAL_WEIGHT if cfg.privacy.mode in CENTRAL_MODES else DEFAULT_KEY


def central_delta(cfg: AppConfig) -> float:
    """Hospital-level delta: the configured one, else 0.1 / min_hospitals."""
    return cfg.privacy.delta or 0.1 / cfg.min_hospitals


def wrap_strategy(cfg: AppConfig, strategy: Strategy) -> Strategy:
    """Flower's central-DP wrapper around ``strategy`` for the central modes; else ``strategy``."""
    p = cfg.privacy
    if p.mode not in CENTRAL_MODES:
        return strategy
    hospitals = cfg.min_hospitals  # every hospital trains every round (fraction_train = 1, checked)
    assert p.noise_multiplier is not None  # check_privacy
    try:
        if p.mode == "central-fixed":
            accountant = RdpAccountant(PrivacyConfig(
                target_delta=central_delta(cfg), population_size=hospitals,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION, max_epsilon=p.epsilon))
            fixed = (DifferentialPrivacyServerSideFixedClipping if p.clipping == "server"
                     else DifferentialPrivacyClientSideFixedClipping)
            return fixed(strategy, p.noise_multiplier, p.clipping_norm, hospitals, accountant=accountant)
        adaptive = (DifferentialPrivacyServerSideAdaptiveClipping if p.clipping == "server"
                    else DifferentialPrivacyClientSideAdaptiveClipping)
        return adaptive(strategy, p.noise_multiplier, hospitals, initial_clipping_norm=p.clipping_norm,
                        target_clipped_quantile=p.target_clipped_quantile, clip_norm_lr=p.clip_norm_lr,
                        clipped_count_stddev=p.clipped_count_stddev)
    except ValueError as exc:
        raise ConfigError(f"invalid privacy settings for privacy={p.mode}: {exc}") from None


class PrivacyMonitor:
    """What the server's round loop does about privacy; a no-op for ``privacy=none``."""

    def __init__(self, cfg: AppConfig, strategy: Strategy) -> None:
        self.cfg = cfg
        self.strategy = strategy
        self.mode = cfg.privacy.mode
        self.delta: float | None = None
        self.epsilons: dict[str, float] = {}  # last epsilon each hospital (dp-sgd) or the server reported
        self.stopped_reason: str | None = None

    def stats_noise_std(self, hospitals: int) -> float:
        """Noise on the summed preprocessing statistics (0 unless they are DP releases)."""
        if self.mode != "dp-sgd":
            return 0.0
        return pooled_noise_std(self.cfg.privacy.stats_noise_multiplier, hospitals)

    def start(self, train_rows: dict[str, int]) -> dict[str, Scalar]:
        """Resolve delta from the hospitals' training rows; the privacy settings of train messages."""
        p = self.cfg.privacy
        if self.mode == "dp-sgd":
            smallest = min(train_rows.values())
            self.delta = p.delta or min(DEFAULT_DELTA, 0.1 / smallest)
            if self.delta >= 1 / smallest:
                raise ConfigError(f"invalid value for 'privacy.delta': {self.delta:g} is not below 1 / {smallest}, "
                                  "the training rows of the smallest hospital; such a delta allows leaking a record")
            budget = f"epsilon {p.epsilon}" if p.epsilon else "no epsilon cap"
            noise = (f"noise multiplier {p.noise_multiplier}" if p.noise_multiplier
                     else f"noise calibrated to spend epsilon {p.epsilon} over {self.cfg.rounds} rounds")
            log.info("Privacy: DP-SGD, record-level per hospital, %s at delta %g, %s, clipping norm %s; the "
                     "preprocessing statistics are a Gaussian release in the same budget", budget, self.delta,
                     noise, p.max_grad_norm)
        elif self.mode in CENTRAL_MODES:
            self.delta = central_delta(self.cfg)
            log.info("Privacy: %s (%s-side clipping), hospital-level, noise multiplier %s over %d hospitals%s",
                     self.mode, p.clipping, p.noise_multiplier, self.cfg.min_hospitals,
                     f", delta {self.delta:g}" if self.mode == "central-fixed" else " (no accountant)")
        return privacy_settings(self.cfg, self.delta)

    def configure_train(self, server_round: int, arrays: Any, config: ConfigRecord, grid: Grid) -> list[Message]:
        """The strategy's train messages; a spent server budget (central-fixed) ends the run."""
        try:
            return list(self.strategy.configure_train(server_round, arrays, config, grid))
        except PrivacyBudgetExhausted as exc:
            raise BudgetExhausted(f"privacy budget spent: round {server_round} would take the server's epsilon "
                                  f"over privacy.epsilon={self.cfg.privacy.epsilon} ({exc})") from None

    def trainable(self, server_round: int, replies: list[Message], name: Callable[[Message], str]) -> list[Message]:
        """The replies to aggregate: without hospitals whose budget is spent (they did not train).

        Raises :class:`BudgetExhausted` when fewer than ``min_replies`` hospitals can still train.
        """
        ok = [r for r in replies if not r.has_error()]
        spent = [r for r in ok if metrics_of(r.content).get(EXHAUSTED)]
        if not spent:
            return replies
        names = ", ".join(f"{name(r)} (epsilon {metrics_of(r.content)[EPSILON]:.3f})" for r in spent)
        log.warning("Round %d: privacy budget spent (privacy.epsilon=%s) at %s: no update from them, they still "
                    "evaluate", server_round, self.cfg.privacy.epsilon, names)
        left = len(ok) - len(spent)
        if left < self.cfg.min_replies:
            raise BudgetExhausted(f"privacy budget spent: in round {server_round} only {left} hospital(s) can still "
                                  f"train within privacy.epsilon={self.cfg.privacy.epsilon}, min_replies="
                                  f"{self.cfg.min_replies} required; spent: {names}")
        return [r for r in replies if r not in spent]

    def round_epsilon(self, server_round: int, rows: Iterable[dict]) -> float | None:
        """Largest epsilon spent so far (any hospital under dp-sgd, the server under central-fixed)."""
        if self.mode == "dp-sgd":
            self.epsilons.update({str(r["hospital"]): float(r[EPSILON]) for r in rows if EPSILON in r})
        elif self.mode == "central-fixed":
            spent = self.strategy.privacy_spent()  # type: ignore[attr-defined]
            if spent is not None and spent.num_releases:
                self.epsilons["server"] = float(spent.epsilon)
        if not self.epsilons:
            return None
        worst = max(self.epsilons.values())
        log.info("Round %d: privacy spent: epsilon %.4f (%s) at delta %g", server_round, worst,
                 "largest over hospitals; a hospital policy's own delta may be smaller" if self.mode == "dp-sgd"
                 else "hospital-level, server accountant", self.delta or 0.0)
        return worst

    def stop(self, reason: str) -> None:
        self.stopped_reason = reason
        log.warning("Stopping the run: %s", reason)

    def summary(self) -> dict[str, Any]:
        """The privacy part of summary.json."""
        p = self.cfg.privacy
        unit = {"dp-sgd": "record (each hospital's training rows)", "none": None}.get(self.mode, "hospital")
        return {"mode": self.mode, "unit": unit, "delta": self.delta, "budget": p.epsilon,
                "epsilon": max(self.epsilons.values()) if self.epsilons else None, "epsilons": dict(self.epsilons)}
