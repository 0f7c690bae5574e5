"""Building a model of the registry (:mod:`fedheart.models`) and moving its weights in and out as numpy."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from fedheart.models import resolve
from fedheart.specs import ModelSpec


def build_model(spec: ModelSpec | str, n_features: int, *, seed: int = 0) -> nn.Module:
    """A freshly initialised model emitting one logit per row; the same seed gives the same weights.

    ``spec`` may be a registered model's name alone: that model with its default parameters.
    """
    kind, params = resolve(ModelSpec(spec) if isinstance(spec, str) else spec)
    torch.manual_seed(seed)
    return kind.build(params, n_features)


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
