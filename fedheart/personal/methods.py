"""What each personalisation method does at a hospital in a round, and its personal model (plain
PyTorch; :mod:`client_app.personal` keeps the per-hospital parts between messages).

``state``: the hospital's own weights for the method (empty before its first round): FedPer's head,
Ditto's and fine-tuning's personal model, FENDA's local extractor and head. None of it is ever sent.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedheart.hospital import HospitalData, fit_model, train_round
from fedheart.model import build_model, get_weights, set_weights
from fedheart.models import resolve
from fedheart.personal import PersonalSettings, head_prefix, shared_keys
from fedheart.personal.fenda import as_mlp, build_fenda, local_parts
from fedheart.preprocess import Preprocessor
from fedheart.privacy import EPSILON, EXHAUSTED
from fedheart.specs import ModelSpec, TrainConfig
from fedheart.training import TensorBatches, evaluate, num_steps, train

if TYPE_CHECKING:
    from torch import nn

    from fedheart.privacy.dpsgd import DPSettings
    from fedheart.privacy.ledger import Ledger

Weights = dict[str, np.ndarray]
PERSONAL_STREAM = 7  # the personal model's batch order differs from the global update's


def _layers(spec: ModelSpec) -> list[str]:
    kind, params = resolve(spec)
    return kind.linear_layers(params)


def personal_config(settings: PersonalSettings, cfg: TrainConfig) -> TrainConfig:
    """Personal training: the round's settings with the method's own steps and learning rate (no FedProx)."""
    return replace(cfg, lr=settings.lr or cfg.lr, local_steps=settings.steps or cfg.local_steps,
                   local_epochs=0 if settings.steps else cfg.local_epochs, proximal_mu=0.0)


def planned_steps(settings: PersonalSettings, cfg: TrainConfig, rows: int, rounds_left: int) -> int:
    """Personal DP-SGD steps still to come in a run (planned into the same budget as training): Ditto's
    every round, fine-tuning's once after the last round."""
    steps = num_steps(personal_config(settings, cfg), rows)
    return {"ditto": steps * max(rounds_left, 1), "finetune": steps}.get(settings.name, 0)


def pull_towards(model: nn.Module, target: Weights, lam: float, lr: float):  # type: ignore[no-untyped-def]
    """Ditto's proximal step after each optimiser step: ``v -= lr * lam * (v - w)`` (data-independent)."""
    anchors = [(p, torch.as_tensor(target[k])) for k, p in model.named_parameters()]

    @torch.no_grad()
    def step() -> None:
        for p, w in anchors:
            p.sub_(lr * lam * (p - w))
    return step


def train_personal(settings: PersonalSettings, data: HospitalData, pre: Preprocessor, received: Weights,
                   state: Weights, spec: ModelSpec, cfg: TrainConfig, *, seed: int, server_round: int,
                   dp: DPSettings | None = None, ledger: Ledger | None = None,
                   public_rows: float | None = None) -> tuple[Weights, dict[str, float], Weights]:
    """One round at a hospital: (the reply's weights, its metrics, the hospital's new state)."""
    common = {"seed": seed, "server_round": server_round, "dp": dp, "ledger": ledger, "public_rows": public_rows}
    if settings.name == "fedper":
        head = head_prefix(_layers(spec)) + "."
        weights, metrics = train_round(data, pre, {**received, **state}, spec, cfg, **common)  # type: ignore[arg-type]
        keep = shared_keys(settings, weights, _layers(spec))
        return {k: weights[k] for k in keep}, metrics, {k: v for k, v in weights.items() if k.startswith(head)}
    if settings.name == "fenda":
        net = build_fenda(spec, pre.num_features, received, state, seed=_local_seed(seed, data))
        metrics = fit_model(net, data, pre, cfg, **common)  # type: ignore[arg-type]
        trained = get_weights(net.global_model)
        return {k: trained[k] for k in shared_keys(settings, trained, _layers(spec))}, metrics, local_parts(net)
    weights, metrics = train_round(data, pre, received, spec, cfg, **common)  # type: ignore[arg-type]
    if settings.name != "ditto":
        return weights, metrics, state
    personal = build_model(spec, pre.num_features)
    set_weights(personal, state or received)
    pcfg = personal_config(settings, cfg)
    own = fit_model(personal, data, pre, pcfg, stream=PERSONAL_STREAM, after_step=pull_towards(
        personal, received, settings.lam, pcfg.lr), **common)  # type: ignore[arg-type]
    spent = {k: own[k] for k in (EPSILON,) if k in own}  # DP-SGD: cumulative after the personal steps too
    if EXHAUSTED in own:
        spent["personal-budget-exhausted"] = own[EXHAUSTED]
    return weights, {**metrics, **spent, "personal-train-loss": own["train-loss"]}, get_weights(personal)


def finetune(settings: PersonalSettings, data: HospitalData, pre: Preprocessor, final: Weights, spec: ModelSpec,
             cfg: TrainConfig, *, seed: int, server_round: int, dp: DPSettings | None = None,
             ledger: Ledger | None = None, public_rows: float | None = None) -> tuple[Weights, dict[str, float]]:
    """Fine-tuning: the final global model trained on the hospital's own rows (the personal model), and the
    training's metrics (under DP-SGD, the epsilon spent after it).

    ``settings.validation`` > 0 (not under DP-SGD, where the choice would be a release outside the budget):
    the model is first fine-tuned on the other training rows and kept only if that lowers the loss on
    this share of them; otherwise the personal model is the global one (``personal-kept-global`` 1).
    """
    if settings.validation > 0 and dp is None and not _helps(settings, data, pre, final, spec, cfg, seed):
        return dict(final), {"personal-kept-global": 1.0}
    model = build_model(spec, pre.num_features)
    set_weights(model, final)
    metrics = fit_model(model, data, pre, personal_config(settings, cfg), seed=seed, server_round=server_round + 1,
                        dp=dp, ledger=ledger, public_rows=public_rows, stream=PERSONAL_STREAM)
    return get_weights(model), metrics | ({"personal-kept-global": 0.0} if settings.validation > 0 and dp is None
                                          else {})


def _helps(settings: PersonalSettings, data: HospitalData, pre: Preprocessor, final: Weights, spec: ModelSpec,
           cfg: TrainConfig, seed: int) -> bool:
    """Whether fine-tuning on part of the training rows lowers the loss on the rest (``settings.validation``)."""
    x, _ = data.features(pre)
    y = data.y_train
    rows = np.random.default_rng(_local_seed(seed, data)).permutation(len(y))
    held = max(1, round(settings.validation * len(y)))
    check, fit = rows[:held], rows[held:]
    if len(fit) == 0:
        return False
    pcfg = personal_config(settings, cfg)
    tuned = build_model(spec, pre.num_features)
    set_weights(tuned, final)
    train(tuned, TensorBatches(x[fit], y[fit], pcfg.batch_size, seed=_local_seed(seed + 1, data)), pcfg,
          num_steps(pcfg, len(fit)))
    return evaluate_personal(spec, get_weights(tuned), x[check], y[check]).loss < \
        evaluate_personal(spec, final, x[check], y[check]).loss


def personal_model(settings: PersonalSettings, spec: ModelSpec, n_features: int, received: Weights,
                   state: Weights, *, seed: int = 0) -> tuple[ModelSpec, Weights] | None:
    """The hospital's personal model as a plain registry model (what it evaluates, saves and predicts with);
    None before it has one."""
    if not state or not settings.active:
        return None
    if settings.name == "fedper":
        return spec, {**received, **state}
    if settings.name == "fenda":
        return as_mlp(build_fenda(spec, n_features, received, state, seed=seed), spec)
    return spec, state


def evaluate_personal(spec: ModelSpec, weights: Weights, x: np.ndarray, y: np.ndarray):  # type: ignore[no-untyped-def]
    """The personal model's evaluation on the hospital's test rows (stays at the hospital)."""
    model = build_model(spec, x.shape[1])
    set_weights(model, weights)
    return evaluate(model, x, y)


def _local_seed(seed: int, data: HospitalData) -> int:
    return int(np.random.SeedSequence([abs(int(seed)), zlib.crc32(data.name.encode())]).generate_state(1)[0])
