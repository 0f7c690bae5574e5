"""What the server tells a hospital to build and train: plain settings, no torch.

The server, the configuration checks and the hospitals share these; keeping them free of torch,
pandas and scikit-learn lets the ServerApp and a ClientApp process start without those imports.
"""

from __future__ import annotations

from dataclasses import dataclass

MODELS = ("logreg", "mlp")
OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class ModelSpec:
    """Which model to build (sent by the server)."""

    name: str = "logreg"
    hidden: int = 32
    layers: int = 1
    dropout: float = 0.1


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
