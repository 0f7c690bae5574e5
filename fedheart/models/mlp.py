"""A small multi-layer perceptron: ``layers`` blocks of Linear, ReLU and Dropout, then one logit."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fedheart.models.base import ModelType


@dataclass(frozen=True)
class Params:
    """conf/model/mlp.yaml's parameters, with its defaults."""

    hidden: int = 32
    layers: int = 1
    dropout: float = 0.1


def check(p: Params) -> Iterator[tuple[str, str]]:
    if p.hidden < 1:
        yield "hidden", f"must be >= 1, got {p.hidden}"
    if p.layers < 1:
        yield "layers", f"must be >= 1, got {p.layers}"
    if not 0.0 <= p.dropout < 1.0:
        yield "dropout", f"must be in [0, 1), got {p.dropout}"


def build(p: Params, n_features: int) -> Any:
    from torch import nn

    from fedheart.models.layers import Logit

    blocks: list[nn.Module] = []
    width = n_features
    for _ in range(p.layers):
        blocks += [nn.Linear(width, p.hidden), nn.ReLU(), nn.Dropout(p.dropout)]
        width = p.hidden
    blocks.append(nn.Linear(width, 1))
    return Logit(net=nn.Sequential(*blocks))


def linear_layers(p: Params) -> list[str]:
    return [f"net.{3 * i}" for i in range(p.layers + 1)]  # Linear, ReLU, Dropout per block, then the last Linear


MODEL = ModelType("mlp", Params, build, linear_layers, check)
