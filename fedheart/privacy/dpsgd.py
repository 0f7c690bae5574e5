"""One round of DP-SGD with Opacus: per-sample clipping, Gaussian noise, Poisson sampling.

The Opacus accountant starts each round from the hospital's :class:`Ledger` and its history is
written back afterwards, so epsilon is cumulative over the statistics release and every round.
Before a round the hospital checks that the round fits in its budget; if not it does not train.
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from torch import nn

from fedheart.privacy import EPSILON, EXHAUSTED, NOISE
from fedheart.privacy.ledger import Entry, Ledger, calibrate_noise
from fedheart.specs import TrainConfig
from fedheart.training import make_optimizer, num_steps, tensor_dataset, train


@dataclass(frozen=True)
class DPSettings:
    """What the server tells a hospital about sample-level DP (``privacy=dp-sgd``)."""

    noise_multiplier: float | None = None  # None: calibrate to spend ``epsilon`` over the run
    epsilon: float | None = 1.0  # the hospital's budget for the run (None: no cap)
    delta: float | None = None  # known once the server has the row counts (train messages)
    max_grad_norm: float = 1.0
    rounds: int = 15
    stats_noise_multiplier: float = 20.0
    noise_seed: int | None = None  # None: fresh OS randomness (the only private choice)
    min_noise_multiplier: float = 0.0  # a hospital policy's floor for the calibrated noise
    reserved: tuple[Entry, ...] = ()  # releases still to come in the run's budget (a policy's evaluations)
    extra_steps: int = 0  # DP-SGD steps of personal training still to come in the run (same sampling rate)

    def __post_init__(self) -> None:
        if self.noise_multiplier is None and self.epsilon is None:
            raise ValueError("DP-SGD needs privacy.noise_multiplier or privacy.epsilon")

    def require_delta(self, train_rows: int) -> float:
        """delta for training; a hospital refuses one that is not below 1 / its training rows."""
        if self.delta is None or not 0 < self.delta < 1:
            raise ValueError(f"DP-SGD needs privacy.delta in (0, 1) from the server, got {self.delta}")
        if self.delta >= 1 / max(train_rows, 1):
            raise ValueError(f"privacy.delta={self.delta:g} is not below 1 / {train_rows} training rows of this "
                             "hospital: such a delta allows leaking a whole record")
        return self.delta


def seeds(dp: DPSettings, *parts: int) -> tuple[int, int]:
    """(sampling seed, noise seed): secret unless ``noise_seed`` fixes them for an experiment."""
    if dp.noise_seed is None:
        return secrets.randbits(63), secrets.randbits(63)
    state = np.random.SeedSequence([abs(int(p)) for p in (dp.noise_seed, *parts)]).generate_state(2)
    return int(state[0]), int(state[1])


def poisson_loader(x: np.ndarray, y: np.ndarray, sample_rate: float, seed: int) -> DPDataLoader:
    """Opacus' Poisson-sampling loader with its own generator.

    Given a loader, Opacus' ``make_private(poisson_sampling=True)`` samples from torch's global generator,
    which ``build_model`` has just seeded with a public seed: the server could tell which rows each
    batch held, and the amplification by sampling the accounting assumes would not hold.
    """
    return DPDataLoader(tensor_dataset(x, y), sample_rate=sample_rate,
                        generator=torch.Generator().manual_seed(seed))


def train_private(model: nn.Module, x: np.ndarray, y: np.ndarray, cfg: TrainConfig, dp: DPSettings,
                  ledger: Ledger, *, server_round: int, seed_parts: tuple[int, ...] = (),
                  public_rows: float | None = None, after_step: Callable[[], None] | None = None) -> dict[str, float]:
    """Train ``model`` in place for one round under DP-SGD, or not at all if the budget is spent.

    ``after_step``: a data-independent update after each noised step (Ditto's pull towards the global
    model; post-processing, so outside the accounting).

    ``public_rows``: the hospital's noisy training-row count (a policy's statistics release). The
    sampling rate, the steps of an epoch, the gradient average and ``num-examples`` then follow it, so
    nothing released depends on the exact count (add/remove-one adjacency holds for what is sent).

    Returns the reply metrics: ``epsilon`` (cumulative, after this round), ``budget-exhausted``
    (1: nothing was trained), ``noise-multiplier``, ``local-steps``, ``num-examples`` and
    ``train-loss`` (NaN: a loss on training rows would be a release outside the accounting).
    """
    if cfg.proximal_mu > 0:
        raise ValueError("DP-SGD cannot add FedProx's proximal term: Opacus would drop it from the clipped "
                         "per-sample gradients")
    rows = float(len(x)) if public_rows is None else max(float(public_rows), 1.0)
    delta = dp.require_delta(round(rows))
    sample_seed, noise_seed = seeds(dp, server_round, *seed_parts)
    batches = max(math.ceil(rows / min(cfg.batch_size, rows)), 1)  # as a DataLoader of batch_size would have
    loader = poisson_loader(x, y, 1 / batches, sample_seed)
    sample_rate = 1 / len(loader)  # what the accountant uses: int(1 / q) batches, so never below q
    steps = num_steps(cfg, round(rows))
    if dp.noise_multiplier is not None:
        sigma = dp.noise_multiplier
    else:
        if ledger.noise_multiplier is None:  # once per run, for all the rounds still to come
            remaining = max(dp.rounds - server_round + 1, 1) * steps + dp.extra_steps
            ledger.noise_multiplier = calibrate_noise(float(dp.epsilon), delta, sample_rate, remaining, ledger,
                                                      reserved=dp.reserved)
        sigma = max(ledger.noise_multiplier, dp.min_noise_multiplier)
    metrics = {"train-loss": math.nan, "local-steps": 0.0, "num-examples": float(round(rows)),
               NOISE: float(sigma), EXHAUSTED: 1.0}
    if ledger.would_exceed((sigma, sample_rate, steps), delta, dp.epsilon, reserved=dp.reserved):
        return metrics | {EPSILON: ledger.epsilon(delta)}
    with warnings.catch_warnings():  # Opacus warns about secure RNG and full backward hooks
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")
        engine.accountant.history = list(ledger.history)
        private, optimizer, private_loader = engine.make_private(
            module=model, optimizer=make_optimizer(model, cfg), data_loader=loader, noise_multiplier=sigma,
            max_grad_norm=dp.max_grad_norm, poisson_sampling=False,
            noise_generator=torch.Generator().manual_seed(noise_seed))
        optimizer.expected_batch_size = max(int(rows * sample_rate), 1)  # from the released count only
        result = train(private, private_loader, cfg, steps, optimizer=optimizer, step_on_empty=True,
                       after_step=after_step)
    ledger.history = [(float(z), float(q), int(n)) for z, q, n in engine.accountant.history]
    return metrics | {EPSILON: ledger.epsilon(delta), EXHAUSTED: 0.0, "local-steps": float(result.steps)}
