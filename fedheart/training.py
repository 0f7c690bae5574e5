"""Local training and evaluation loops (plain PyTorch, no federated code)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.optim.adam import adam
from torch.optim.adamw import adamw
from torch.optim.sgd import sgd
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from fedheart.metrics import accuracy, auc
from fedheart.specs import OPTIMIZERS, TrainConfig


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


def tensor_dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    return TensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32))


def make_loader(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> DataLoader:
    """A shuffling DataLoader over in-memory tensors, reproducible for a seed (what Opacus wraps)."""
    dataset = tensor_dataset(x, y)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=True, generator=generator)


class TensorBatches:
    """Shuffled minibatches of in-memory tensors, one epoch per iteration, reproducible for a seed.

    torch's ``RandomSampler`` and ``BatchSampler`` choose the rows, as in a shuffling DataLoader, but a
    batch is one indexing of the tensors: a DataLoader fetches and collates row by row, which for a
    16-row batch of a small model cost as much as the training step itself (bench/results/perf).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> None:
        self.dataset = tensor_dataset(x, y)
        sampler = RandomSampler(self.dataset, generator=torch.Generator().manual_seed(seed))
        self.batches = BatchSampler(sampler, batch_size=min(batch_size, len(self.dataset)), drop_last=False)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.dataset.tensors
        for rows in self.batches:
            yield x[rows], y[rows]

    def __len__(self) -> int:
        return len(self.batches)


Batches = DataLoader | TensorBatches  # DataLoader: Opacus' Poisson sampling under DP-SGD


ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's and AdamW's defaults


def _check_optimizer(name: str) -> None:
    if name not in OPTIMIZERS:
        raise ValueError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


class FunctionalOptimizer:
    """SGD (with momentum), Adam or AdamW through torch's functional update rules
    (``torch.optim.sgd.sgd``, ``torch.optim.adam.adam``, ``torch.optim.adamw.adamw``): the same
    arithmetic as the ``torch.optim`` classes, which a test checks bit for bit.

    The classes' ``step`` and ``zero_grad`` import ``torch._dynamo``, the compiler, on first use:
    about 1.5 CPU-s in every fresh ClientApp process (a deployed SuperNode starts one per message)
    for a compiler never used here. Opacus needs a ``torch.optim.Optimizer``: DP-SGD keeps
    :func:`make_optimizer`.
    """

    def __init__(self, params: Iterable[nn.Parameter], cfg: TrainConfig) -> None:
        _check_optimizer(cfg.optimizer)
        self.cfg = cfg
        self.params = [p for p in params if p.requires_grad]
        self.momentum: list[torch.Tensor | None] = [None] * len(self.params)  # SGD's buffers, made on first use
        adam_state = cfg.optimizer != "sgd"  # Adam's moments and step counts, as torch.optim.Adam starts them
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params if adam_state]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params if adam_state]
        self.steps = [torch.tensor(0.0) for _ in self.params if adam_state]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        params = [self.params[i] for i in live]
        grads = [p.grad for p in params]
        c = self.cfg
        if c.optimizer == "sgd":
            buffers = [self.momentum[i] for i in live]
            sgd(params, grads, buffers, foreach=False, weight_decay=c.weight_decay, momentum=c.momentum, lr=c.lr,
                dampening=0.0, nesterov=False, maximize=False)
            for i, buffer in zip(live, buffers, strict=True):
                self.momentum[i] = buffer
            return
        update = adamw if c.optimizer == "adamw" else adam
        update(params, grads, [self.exp_avg[i] for i in live], [self.exp_avg_sq[i] for i in live], [],
               [self.steps[i] for i in live], foreach=False, amsgrad=False, beta1=ADAM_BETAS[0],
               beta2=ADAM_BETAS[1], lr=c.lr, weight_decay=c.weight_decay, eps=ADAM_EPS, maximize=False)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """A ``torch.optim`` optimizer, for Opacus to wrap (DP-SGD); other training uses
    :class:`FunctionalOptimizer`. ``foreach=False`` (one tensor at a time) skips the per-step check
    for the multi-tensor path, which costs more than the whole update of these small models."""
    _check_optimizer(cfg.optimizer)
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=False)
    adam_class = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return adam_class(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False)


def num_steps(cfg: TrainConfig, num_examples: int) -> int:
    """Local steps of one round: ``local_steps``, or whole epochs when ``local_epochs`` > 0."""
    if cfg.local_epochs > 0:
        return cfg.local_epochs * math.ceil(num_examples / max(1, min(cfg.batch_size, num_examples)))
    return cfg.local_steps


def _cycle(loader: Batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:  # Poisson sampling (DP) may give an empty epoch; never loop forever
            return


def train(model: nn.Module, loader: Batches, cfg: TrainConfig, steps: int,
          optimizer: torch.optim.Optimizer | FunctionalOptimizer | None = None, *,
          step_on_empty: bool = False, after_step: Callable[[], None] | None = None) -> TrainResult:
    """Run ``steps`` minibatch steps of BCE training (with FedProx's term if ``proximal_mu`` > 0).

    ``step_on_empty``: an empty Poisson batch still takes an optimiser step (DP-SGD: the step is
    noise only, and the accountant counts it); otherwise it is skipped. ``after_step``: called after
    each optimiser step (a data-independent update, e.g. Ditto's pull towards the global model).
    """
    optimizer = optimizer or FunctionalOptimizer(model.parameters(), cfg)
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
        if after_step is not None:
            after_step()
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
