"""Logistic regression: one linear layer, the logit of P(disease)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedheart.models.base import ModelType


@dataclass(frozen=True)
class Params:
    """No parameters of its own (conf/model/logreg.yaml holds only the name)."""


def build(params: Params, n_features: int) -> Any:
    from torch import nn

    from fedheart.models.layers import Logit

    return Logit(linear=nn.Linear(n_features, 1))


MODEL = ModelType("logreg", Params, build, linear_layers=lambda params: ["linear"])
