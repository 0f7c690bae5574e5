"""Models: logistic regression (default) and a small MLP, both emitting one logit per row."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from fedheart.specs import MODELS


class LogisticRegression(nn.Module):
    """One linear layer; the logit of P(disease)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(num_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


class MLP(nn.Module):
    """A small multi-layer perceptron with ReLU and dropout."""

    def __init__(self, num_features: int, hidden: int = 32, layers: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = num_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        blocks.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def build_model(name: str, num_features: int, *, hidden: int = 32, layers: int = 1,
                dropout: float = 0.1, seed: int = 0) -> nn.Module:
    """A freshly initialised model; the same seed gives the same weights."""
    torch.manual_seed(seed)
    if name == "logreg":
        return LogisticRegression(num_features)
    if name == "mlp":
        return MLP(num_features, hidden=hidden, layers=layers, dropout=dropout)
    raise ValueError(f"model.name must be one of {', '.join(MODELS)}, got {name!r}")


def get_weights(model: nn.Module) -> OrderedDict[str, np.ndarray]:
    """The model's parameters as named numpy arrays (copies)."""
    return OrderedDict((k, v.detach().cpu().numpy().copy()) for k, v in model.state_dict().items())


def set_weights(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    """Load named numpy arrays into the model, checking names and shapes."""
    state = model.state_dict()
    if set(state) != set(weights):
        raise ValueError(f"weights do not match the model: expected {sorted(state)}, got {sorted(weights)}")
    for k, v in weights.items():
        if tuple(state[k].shape) != tuple(np.shape(v)):
            raise ValueError(f"weight {k!r} has shape {np.shape(v)}, the model expects {tuple(state[k].shape)}")
    model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in weights.items()})
