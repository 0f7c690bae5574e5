"""The torch module every model of the registry returns (imported by a model's ``build`` only)."""

from __future__ import annotations

import torch
from torch import nn


class Logit(nn.Module):
    """Named layers applied in order, the last one's single output squeezed to one logit per row.

    The names are the state-dict prefixes (``Logit(linear=nn.Linear(n, 1))`` holds ``linear.weight``).
    """

    def __init__(self, **layers: nn.Module) -> None:
        super().__init__()
        for name, layer in layers.items():
            self.add_module(name, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = layer(x)
        return x.squeeze(-1)
