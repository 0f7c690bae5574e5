"""The check of one request against the hospital's policy: accepted (with the hospital's own values
put in place of the server's) or :class:`~fedheart.safeguard.policy.Refused`.

Message kinds: ``query.stats``, ``train``, ``evaluate``, ``query.baseline``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fedheart.safeguard.policy import MODES, Policy, Refused

# Server settings the audit trail records as "requested" (what decides what a hospital releases).
AUDITED = ("privacy.mode", "privacy.epsilon", "privacy.delta", "privacy.noise-multiplier",
           "privacy.stats-noise-multiplier", "privacy.noise-seed", "privacy.rounds", "privacy.max-grad-norm",
           "privacy.clipping", "split-seed", "train-fraction", "pipeline", "tracking.backend", "server-round",
           "train.local_steps", "train.local_epochs", "train.batch_size", "baseline.local-only")


@dataclass
class Decision:
    """An accepted request: the config the hospital acts on, and what it changed in the server's."""

    config: dict[str, Any]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {requested, used}

    def set(self, key: str, value: Any) -> None:
        requested = self.config.get(key)
        if requested != value:
            self.overrides[key] = {"requested": requested, "used": value}
        self.config[key] = value


def requested(config: dict[str, Any]) -> dict[str, Any]:
    """The privacy-relevant settings of a request, for the audit trail."""
    return {k: config[k] for k in AUDITED if k in config}


def _mode_rank(mode: str) -> int:
    return MODES.index(mode) if mode in MODES else 0  # central-*: no record-level noise at the hospital


def check_request(policy: Policy, kind: str, config: dict[str, Any], *, simulation: bool,
                  evaluations_done: int = 0, hospital: str = "") -> Decision:
    """Accept ``config`` for a message of ``kind`` under ``policy`` or raise :class:`Refused`.

    ``hospital``: this hospital's name, which a ``holdout`` request may name: evaluating on every row
    (training rows included) is then allowed only as a DP release (``release.evaluation: dp``), else it
    would move the training rows into the test set that exact releases cover."""
    decision = Decision(dict(config))
    if hospital and str(config.get("holdout", "")) == hospital and policy.evaluation != "dp":
        raise Refused("release.evaluation", f"data.holdout={hospital} (evaluation on every row, training rows "
                      "included)", f"{policy.evaluation} (exact metrics of the test rows only)")
    decision.set("split-seed", policy.split_seed)
    decision.set("train-fraction", policy.train_fraction)
    if kind == "query.baseline" and not policy.baselines:
        raise Refused("release.baselines", "the majority and local-only baselines", "false (no baselines)")
    if kind in ("train", "evaluate") and str(config.get("tracking.backend", "local")) != "local" \
            and not policy.tracking:
        raise Refused("release.tracking", f"tracking.backend={config.get('tracking.backend')}",
                      "false (no logging from this hospital)")
    pipeline = str(config.get("pipeline", "project"))
    if pipeline != "project" and (policy.dp_required or policy.evaluation == "dp"):
        raise Refused("privacy.require", f"pipeline={pipeline} (standardised with the exact local mean and std, "
                      "outside any DP release)", "pipeline=project")
    if kind == "evaluate":
        if policy.evaluation == "none":
            raise Refused("release.evaluation", "an evaluation", "none")
        if evaluations_done >= policy.max_evaluations_per_run:
            raise Refused("release.max-evaluations-per-run", f"evaluation {evaluations_done + 1} of this run",
                          policy.max_evaluations_per_run)
        return decision
    mode = str(config.get("privacy.mode", "none"))
    if _mode_rank(mode) < _mode_rank(policy.require):
        raise Refused("privacy.require", f"privacy.mode={mode}", policy.require)
    if mode == "dp-sgd":
        _check_dp(policy, decision, simulation)
    return decision


def _check_dp(policy: Policy, decision: Decision, simulation: bool) -> None:
    config = decision.config
    epsilon = float(config.get("privacy.epsilon", 0.0) or 0.0)
    if not 0 < epsilon <= policy.max_epsilon_per_run:
        asked = f"privacy.epsilon={epsilon:g}" + (" (no cap)" if epsilon <= 0 else "")
        raise Refused("privacy.max-epsilon-per-run", asked, f"0 < epsilon <= {policy.max_epsilon_per_run:g}")
    for key in ("privacy.noise-multiplier", "privacy.stats-noise-multiplier"):
        z = float(config.get(key, 0.0) or 0.0)
        calibrated = key == "privacy.noise-multiplier" and z == 0  # 0: calibrated to the budget, checked then
        if not calibrated and not (math.isfinite(z) and z >= policy.min_noise_multiplier):  # nan, inf: refused
            raise Refused("privacy.min-noise-multiplier", f"{key}={z:g}", f">= {policy.min_noise_multiplier:g}")
    clip = float(config.get("privacy.max-grad-norm", 1.0))
    if not (math.isfinite(clip) and clip > 0):
        raise Refused("privacy.require", f"privacy.max-grad-norm={clip:g}", "a finite clipping norm > 0 (DP-SGD)")
    asked_delta = float(config["privacy.delta"]) if "privacy.delta" in config else None
    decision.set("privacy.delta", policy.delta if asked_delta is None else min(policy.delta, asked_delta))
    if int(config.get("privacy.noise-seed", -1)) >= 0 and not (simulation and policy.seeded_noise):
        decision.set("privacy.noise-seed", -1)  # fresh OS randomness, whatever the server asked
