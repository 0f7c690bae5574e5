"""Local training and evaluation loops (plain PyTorch, no federated code)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedheart.metrics import accuracy, auc

OPTIMIZERS = ("sgd", "adam", "adamw")


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


@dataclass(frozen=True)
class TrainResult:
    loss: float
    steps: int
    num_examples: int


@dataclass(frozen=True)
class EvalResult:
    loss: float
    auc: float
    accuracy: float
    num_examples: int
    scores: np.ndarray  # predicted probabilities; stays on the hospital


def make_loader(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> DataLoader:
    """A shuffling loader over in-memory tensors, reproducible for a seed."""
    dataset = TensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=True, generator=generator)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")


def num_steps(cfg: TrainConfig, num_examples: int) -> int:
    """Local steps of one round: ``local_steps``, or whole epochs when ``local_epochs`` > 0."""
    if cfg.local_epochs > 0:
        return cfg.local_epochs * math.ceil(num_examples / max(1, min(cfg.batch_size, num_examples)))
    return cfg.local_steps


def _cycle(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:  # Poisson sampling (DP) may give an empty epoch; never loop forever
            return


def train(model: nn.Module, loader: DataLoader, cfg: TrainConfig, steps: int,
          optimizer: torch.optim.Optimizer | None = None, *, step_on_empty: bool = False) -> TrainResult:
    """Run ``steps`` minibatch steps of BCE training (with FedProx's term if ``proximal_mu`` > 0).

    ``step_on_empty``: an empty Poisson batch still takes an optimiser step (DP-SGD: the step is
    noise only, and the accountant counts it); otherwise it is skipped.
    """
    optimizer = optimizer or make_optimizer(model, cfg)
    criterion = nn.BCEWithLogitsLoss()
    anchor = [p.detach().clone() for p in model.parameters()] if cfg.proximal_mu > 0 else None
    model.train()
    total, done, losses = 0.0, 0, 0
    for x, y in _cycle(loader):
        if done >= steps:
            break
        if len(x) == 0 and not step_on_empty:  # empty Poisson batch
            done += 1
            continue
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        objective = loss
        if anchor is not None:
            prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))
            objective = loss + 0.5 * cfg.proximal_mu * prox
        objective.backward()
        optimizer.step()
        if len(x):
            total += float(loss.detach())
            losses += 1
        done += 1
    return TrainResult(loss=total / max(losses, 1), steps=done, num_examples=len(loader.dataset))


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Predicted probabilities of disease."""
    model.eval()
    return torch.sigmoid(model(torch.as_tensor(x, dtype=torch.float32))).numpy()


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> EvalResult:
    """BCE loss, ROC AUC and accuracy of the model on (x, y)."""
    model.eval()
    logits = model(torch.as_tensor(x, dtype=torch.float32))
    target = torch.as_tensor(y, dtype=torch.float32)
    loss = float(nn.functional.binary_cross_entropy_with_logits(logits, target)) if len(y) else math.nan
    scores = torch.sigmoid(logits).numpy()
    return EvalResult(loss=loss, auc=auc(y, scores), accuracy=accuracy(y, scores),
                      num_examples=len(y), scores=scores)
