"""A strategy's own state in checkpoints: one adapter per strategy family.

FedAvg and FedProx keep nothing between rounds; the FedOpt family (FedAdam, FedYogi, FedAdagrad) keeps
the server optimiser's moments. Flower's DP wrappers hold the strategy they wrap in ``.strategy``: the
adapter looks through them. A checkpoint stores ``{name: {array name: tensor}}`` under
``strategy_state`` (the format of checkpoints made before this module, so they still resume).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.fedopt import FedOpt

Saved = dict[str, dict[str, torch.Tensor]]


def base_strategy(strategy: Strategy) -> Strategy:
    """The strategy under any of Flower's wrappers (DP wrappers keep it in ``.strategy``)."""
    while hasattr(strategy, "strategy"):
        strategy = strategy.strategy  # type: ignore[attr-defined]
    return strategy


class StrategyState(Protocol):
    def save(self, strategy: Strategy) -> Saved: ...

    def restore(self, strategy: Strategy, saved: Saved) -> None: ...


class Stateless:
    """FedAvg, FedProx and the others that keep nothing between rounds."""

    def save(self, strategy: Strategy) -> Saved:
        return {}

    def restore(self, strategy: Strategy, saved: Saved) -> None:
        if saved:
            raise ValueError(f"the checkpoint holds strategy state {sorted(saved)}, which "
                             f"{type(base_strategy(strategy)).__name__} does not keep")


class FedOptState:
    """The server optimiser's moments ``m_t`` and ``v_t`` (FedAdagrad has no ``m_t`` of its own use)."""

    ATTRIBUTES = ("m_t", "v_t")

    def save(self, strategy: Strategy) -> Saved:
        base = base_strategy(strategy)
        return {attr: {k: torch.as_tensor(v) for k, v in getattr(base, attr).items()}
                for attr in self.ATTRIBUTES if getattr(base, attr, None)}

    def restore(self, strategy: Strategy, saved: Saved) -> None:
        base = base_strategy(strategy)
        unknown = set(saved) - set(self.ATTRIBUTES)
        if unknown:
            raise ValueError(f"the checkpoint holds strategy state {sorted(unknown)} unknown to FedOpt")
        for attr, arrays in saved.items():
            setattr(base, attr, {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in arrays.items()})


def state_adapter(strategy: Strategy) -> StrategyState:
    """The adapter of this strategy's family."""
    return FedOptState() if isinstance(base_strategy(strategy), FedOpt) else Stateless()
