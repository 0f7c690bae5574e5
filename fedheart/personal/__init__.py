"""Personalised federated learning at a hospital (``conf/personalization/``): plain settings, no torch.

Methods (``personalization.name``):

- ``none``: the global model only.
- ``finetune``: after the last round each hospital fine-tunes the final global model on its own rows.
- ``fedper`` (Arivazhagan et al. 2019): the model's body is federated, its last layer (the head) stays at
  each hospital; replies carry the body only.
- ``ditto`` (Li et al., ICML 2021): the global model is trained as FedAvg; each hospital also trains a
  personal model pulled towards the global one by ``lam / 2 * ||v - w||^2``.
- ``fenda`` (FENDA-FL, Tavakoli et al. 2024): a global feature extractor (federated) and a local one, both
  the model's body, feed a local head; replies carry the global extractor only.

Per-hospital parts never leave the hospital: they live in the SuperNode's state for the run, and in the
hospital's ``state-dir`` where it has one (``client_app.personal``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

METHODS = ("none", "finetune", "fedper", "ditto", "fenda")
LOCAL_PARTS = ("fedper", "fenda")  # methods whose replies leave out what stays at the hospital
PREFIX = "personalization."


@dataclass(frozen=True)
class PersonalSettings:
    """A run's personalisation, as sent to the hospitals (``personalization.*`` message keys)."""

    name: str = "none"
    steps: int = 0  # finetune: steps after the last round; ditto: personal steps per round (0: train's)
    lr: float = 0.0  # learning rate of personal training (0: train.lr)
    lam: float = 0.1  # ditto: weight of the pull towards the global model
    validation: float = 0.0  # finetune: share of the training rows that checks it (0: always fine-tune)

    @property
    def active(self) -> bool:
        return self.name != "none"

    @property
    def keeps_local_parts(self) -> bool:
        """Whether some of the model's weights stay at the hospital (replies carry the rest)."""
        return self.name in LOCAL_PARTS

    def to_config(self) -> dict[str, str | int | float]:
        return {f"{PREFIX}name": self.name, f"{PREFIX}steps": self.steps, f"{PREFIX}lr": self.lr,
                f"{PREFIX}lambda": self.lam, f"{PREFIX}validation": self.validation}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PersonalSettings:
        """The settings of a received message (none when it carries no personalisation)."""
        name = str(config.get(f"{PREFIX}name", "none"))
        if name not in METHODS:
            raise ValueError(f"personalization.name must be one of {', '.join(METHODS)}, got {name!r}")
        return cls(name, int(config.get(f"{PREFIX}steps", 0)), float(config.get(f"{PREFIX}lr", 0.0)),
                   float(config.get(f"{PREFIX}lambda", 0.1)), float(config.get(f"{PREFIX}validation", 0.0)))


def head_prefix(linear_layers: list[str]) -> str:
    """The state-dict prefix of a model's head: its last linear layer."""
    return linear_layers[-1]


def shared_keys(settings: PersonalSettings, keys: Iterable[str], linear_layers: list[str]) -> list[str]:
    """The weights a hospital's reply carries (and the server aggregates): all but the head for the
    methods that keep local parts, every weight otherwise."""
    keys = list(keys)
    if not settings.keeps_local_parts:
        return keys
    head = head_prefix(linear_layers) + "."
    return [k for k in keys if not k.startswith(head)]
