"""Model, one training step, evaluation metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fedheart.metrics import auc_from_histograms, score_histograms
from fedheart.model import build_model, get_weights, set_weights
from fedheart.training import TrainConfig, evaluate, make_loader, num_steps, train


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


def test_one_training_step_changes_weights_and_training_lowers_loss() -> None:
    x, y = separable()
    model = build_model("logreg", 5, seed=0)
    before = get_weights(model)
    cfg = TrainConfig(lr=0.5, local_steps=1, batch_size=16)
    result = train(model, make_loader(x, y, 16, seed=0), cfg, steps=1)
    assert result.steps == 1 and result.num_examples == 200
    assert not np.allclose(before["linear.weight"], get_weights(model)["linear.weight"])
    initial = evaluate(model, x, y).loss
    train(model, make_loader(x, y, 16, seed=0), cfg, steps=200)
    final = evaluate(model, x, y)
    assert final.loss < initial
    assert final.auc > 0.95 and final.accuracy > 0.9


def test_fedprox_term_keeps_weights_closer_to_the_global_model() -> None:
    x, y = separable()
    drift = {}
    for mu in (0.0, 10.0):
        model = build_model("logreg", 5, seed=0)
        start = get_weights(model)
        train(model, make_loader(x, y, 16, seed=1), TrainConfig(lr=0.2, proximal_mu=mu), steps=50)
        drift[mu] = float(np.linalg.norm(get_weights(model)["linear.weight"] - start["linear.weight"]))
    assert drift[10.0] < drift[0.0]


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
