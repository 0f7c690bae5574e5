"""The checkpoint phase: after each round the model, the strategy's state and what a resume needs.

A checkpoint is written atomically (``RunDir.save_checkpoint``); :func:`restore` checks that it was
made with this run's strategy, model and pipeline before any of it is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.serverapp.strategy import Strategy

from fedheart.config import AppConfig
from fedheart.models import full_spec, same_model
from fedheart.runs import RunDir, load_checkpoint
from server_app.errors import FederationError
from server_app.strategy_state import state_adapter


@dataclass
class Restored:
    """What a resumed run continues from."""

    weights: dict[str, np.ndarray]
    initial: dict[str, np.ndarray]
    preprocessing: str
    last_round: int
    federation: dict[int, dict[str, float]]


def _tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()}


def save(run_dir: RunDir, cfg: AppConfig, strategy: Strategy, weights: dict[str, np.ndarray], server_round: int,
         *, preprocessing: str, federation: dict[int, dict[str, float]], initial: dict[str, np.ndarray]) -> None:
    """Checkpoint the run after ``server_round``."""
    run_dir.save_checkpoint({
        "round": server_round,
        "weights": _tensors(weights),
        "strategy": cfg.strategy.name,
        "strategy_state": state_adapter(strategy).save(strategy),
        "preprocessing": preprocessing,
        "model": full_spec(cfg.model).to_dict(),  # a name only in checkpoints made before fedheart.models
        "pipeline": cfg.data.pipeline,
        "federation": {str(k): v for k, v in federation.items()},
        "initial_weights": _tensors(initial),
    })


def restore(cfg: AppConfig, strategy: Strategy) -> Restored:
    """Load ``cfg.resume``, check it belongs to this configuration, and put the strategy's state back."""
    state: dict[str, Any] = load_checkpoint(cfg.resume or "")
    for key, want in (("strategy", cfg.strategy.name), ("pipeline", cfg.data.pipeline)):
        if state.get(key) != want:
            raise FederationError(f"resume: the checkpoint was made with {key}={state.get(key)!r}, "
                                  f"this run has {key}={want!r}; use the same configuration")
    if not same_model(state.get("model"), cfg.model):
        raise FederationError(f"resume: the checkpoint was made with model={state.get('model')!r}, "
                              f"this run has model={cfg.model.to_dict()!r}; use the same configuration")
    try:
        state_adapter(strategy).restore(strategy, state.get("strategy_state", {}))
    except ValueError as exc:
        raise FederationError(f"resume: {exc}") from None
    return Restored(weights={k: v.numpy() for k, v in state["weights"].items()},
                    initial={k: v.numpy() for k, v in state["initial_weights"].items()},
                    preprocessing=state["preprocessing"], last_round=int(state["round"]),
                    federation={int(k): v for k, v in state.get("federation", {}).items()})
