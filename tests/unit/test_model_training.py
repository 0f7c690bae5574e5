"""Model, one training step, evaluation metrics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fedheart.histograms import auc_from_histograms, score_histograms
from fedheart.model import build_model, get_weights, set_weights
from fedheart.specs import ModelSpec, TrainConfig
from fedheart.training import (
    FunctionalOptimizer,
    TensorBatches,
    evaluate,
    make_loader,
    make_optimizer,
    num_steps,
    train,
)


@pytest.mark.parametrize("name", ["logreg", "mlp"])
def test_models_emit_one_logit_per_row_and_seed_fixes_weights(name: str) -> None:
    a, b = build_model(name, 7, seed=3), build_model(name, 7, seed=3)
    out = a(torch.zeros(5, 7))
    assert out.shape == (5,)
    for (ka, va), (kb, vb) in zip(get_weights(a).items(), get_weights(b).items(), strict=True):
        assert ka == kb and np.array_equal(va, vb)


def test_set_weights_rejects_wrong_shapes() -> None:
    model = build_model("logreg", 4)
    weights = get_weights(model)
    weights["linear.weight"] = np.zeros((1, 5), dtype=np.float32)
    with pytest.raises(ValueError, match="shape"):
        set_weights(model, weights)


def separable(n: int = 200, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)
    return x, y


@pytest.mark.parametrize("batches", [TensorBatches, make_loader])
def test_one_training_step_changes_weights_and_training_lowers_loss(batches) -> None:
    x, y = separable()
    model = build_model("logreg", 5, seed=0)
    before = get_weights(model)
    cfg = TrainConfig(lr=0.5, local_steps=1, batch_size=16)
    result = train(model, batches(x, y, 16, seed=0), cfg, steps=1)
    assert result.steps == 1 and result.num_examples == 200
    assert not np.allclose(before["linear.weight"], get_weights(model)["linear.weight"])
    initial = evaluate(model, x, y).loss
    train(model, batches(x, y, 16, seed=0), cfg, steps=200)
    final = evaluate(model, x, y)
    assert final.loss < initial
    assert final.auc > 0.95 and final.accuracy > 0.9


def test_fedprox_term_keeps_weights_closer_to_the_global_model() -> None:
    x, y = separable()
    drift = {}
    for mu in (0.0, 10.0):
        model = build_model("logreg", 5, seed=0)
        start = get_weights(model)
        train(model, TensorBatches(x, y, 16, seed=1), TrainConfig(lr=0.2, proximal_mu=mu), steps=50)
        drift[mu] = float(np.linalg.norm(get_weights(model)["linear.weight"] - start["linear.weight"]))
    assert drift[10.0] < drift[0.0]


@pytest.mark.parametrize("cfg", [TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.01),
                                 TrainConfig(optimizer="adam", lr=0.01, weight_decay=0.01),
                                 TrainConfig(optimizer="adamw", lr=0.01, weight_decay=0.05)],
                         ids=["sgd-momentum", "adam", "adamw"])
def test_functional_optimizer_updates_exactly_as_torch_optim(cfg: TrainConfig) -> None:
    x, y = separable()
    initial = get_weights(build_model(ModelSpec("mlp", {"hidden": 8}), 5, seed=2))
    trained = []
    for use_torch_optim in (False, True):
        model = build_model(ModelSpec("mlp", {"hidden": 8}), 5, seed=2)
        optimizer = make_optimizer(model, cfg) if use_torch_optim else None  # None: FunctionalOptimizer
        torch.manual_seed(7)  # the same dropout masks in both runs
        train(model, TensorBatches(x, y, 16, seed=3), cfg, steps=40, optimizer=optimizer)
        trained.append(get_weights(model))
    for name in initial:
        assert not np.array_equal(trained[0][name], initial[name]), name
        assert np.array_equal(trained[0][name], trained[1][name]), name  # bit for bit


def test_both_optimizer_paths_reject_an_unknown_optimizer() -> None:
    cfg = TrainConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match=r"train\.optimizer must be one of sgd, adam, adamw"):
        FunctionalOptimizer(build_model("logreg", 3).parameters(), cfg)
    with pytest.raises(ValueError, match=r"train\.optimizer must be one of sgd, adam, adamw"):
        make_optimizer(build_model("logreg", 3), cfg)  # the torch.optim path (DP-SGD)


def test_training_and_evaluation_never_import_the_compiler() -> None:
    """torch.optim's classes import torch._dynamo (~1.5 CPU-s) on first use; a fresh ClientApp process
    (one per message in a deployment) must not pay for it."""
    code = """
import sys
import numpy as np
from fedheart.model import build_model
from fedheart.specs import TrainConfig
from fedheart.training import TensorBatches, evaluate, train
x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
y = (x[:, 0] > 0).astype(np.float32)
for optimizer in ("sgd", "adam", "adamw"):
    model = build_model("mlp", 4)
    train(model, TensorBatches(x, y, 16, seed=0), TrainConfig(optimizer=optimizer, momentum=0.5), steps=5)
    evaluate(model, x, y)
assert "torch" in sys.modules and "torch._dynamo" not in sys.modules, "torch._dynamo was imported"
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_tensor_batches_cover_every_row_once_per_epoch_reproducibly() -> None:
    x = np.arange(50, dtype=np.float32).reshape(50, 1)
    y = np.arange(50, dtype=np.float32)
    batches = TensorBatches(x, y, 16, seed=3)
    epochs = [[(bx[:, 0].tolist(), by.tolist()) for bx, by in batches] for _ in range(2)]
    assert len(batches) == 4 and [len(b[1]) for b in epochs[0]] == [16, 16, 16, 2]
    for epoch in epochs:
        rows = [r for bx, by in epoch for r in by]
        assert sorted(rows) == y.tolist()  # each row once
        assert all(bx == by for bx, by in epoch)  # features stay with their label
    assert epochs[0] != epochs[1]  # reshuffled every epoch
    again = TensorBatches(x, y, 16, seed=3)
    assert [by.tolist() for _, by in again] == [b[1] for b in epochs[0]]
    assert [by.tolist() for _, by in TensorBatches(x, y, 16, seed=4)] != [b[1] for b in epochs[0]]
    assert len(TensorBatches(x[:5], y[:5], 16, seed=0)) == 1  # a batch larger than the data: one batch


def test_local_epochs_override_steps() -> None:
    assert num_steps(TrainConfig(local_steps=7), 100) == 7
    assert num_steps(TrainConfig(local_epochs=2, batch_size=16), 100) == 14


def test_auc_from_histograms_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    scores = 1 / (1 + np.exp(-(y * 1.5 + rng.normal(size=500))))
    pos, neg = score_histograms(y, scores)
    assert auc_from_histograms(pos, neg) == pytest.approx(roc_auc_score(y, scores), abs=0.005)
    assert np.isnan(auc_from_histograms(pos, [0] * len(neg)))


def test_evaluate_gives_nan_auc_for_a_single_class() -> None:
    x, _ = separable(20)
    result = evaluate(build_model("logreg", 5), x, np.ones(20, dtype=np.float32))
    assert np.isnan(result.auc) and 0.0 <= result.accuracy <= 1.0
