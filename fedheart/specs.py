"""What the server tells a hospital to build and train: plain settings, no torch.

The server, the configuration checks and the hospitals share these; keeping them free of torch,
pandas and scikit-learn lets the ServerApp and a ClientApp process start without those imports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class ModelSpec:
    """Which model to build (``cfg.model``, sent by the server): a model of :mod:`fedheart.models` and
    that model's own parameters (``conf/model/<name>.yaml``; missing ones take the model's defaults)."""

    name: str = "logreg"
    params: dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:  # a spec is a value (cached models, sets); its dict of parameters is not hashable
        return hash(json.dumps(self.to_dict(), sort_keys=True, default=str))

    def __getattr__(self, key: str) -> Any:  # only for names that are not attributes: say where they went
        if key.startswith("_"):
            raise AttributeError(key)
        raise AttributeError(f"ModelSpec has no attribute {key!r}: the model's own parameters are in .params "
                             f"({self.name}: {', '.join(self.params) or 'none'}); build it with "
                             "fedheart.model.build_model(spec, n_features)")

    def to_dict(self) -> dict[str, Any]:
        """The serialised spec (messages, checkpoints, ``final_model.json``): ``{"name": ..., <param>: ...}``."""
        return {"name": self.name, **self.params}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        rest = dict(data)
        return cls(str(rest.pop("name", "logreg")), rest)


@dataclass(frozen=True)
class TrainConfig:
    """One round of local training, as sent by the server."""

    lr: float = 0.05
    local_steps: int = 100
    local_epochs: int = 0  # > 0: train whole epochs instead of ``local_steps``
    batch_size: int = 16
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    proximal_mu: float = 0.0  # FedProx: weight of ||w - w_global||^2 / 2
