"""Personalisation (``personalization=``): what stays at the hospital, what a server can get, and the numbers.

The hospital side is the real ClientApp over a LoopbackGrid, driven by a server that sends what it likes
(tests/unit/test_malicious_server.py's ``Server``); the server side is the real ``Federation``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fedheart.config import ConfigError, load_config
from fedheart.model import build_model, get_weights, set_weights
from fedheart.personal import PersonalSettings, shared_keys
from fedheart.personal.fenda import Fenda, as_mlp
from fedheart.safeguard.budget import books
from fedheart.saved_model import load_model
from fedheart.specs import ModelSpec
from fedheart.summary_personal import personal_summary
from fedheart.tables import read_table
from tests.unit.test_malicious_server import (
    STRICT,
    Server,
    accepted,
    arrays_of,
    hospital,
    metrics_of,
    preprocessor,
)

FEDPER = "personalization=fedper model=mlp train.local_steps=5 rounds=2"
HEAD = "net.3."  # an MLP of one hidden layer: Linear (net.0), ReLU, Dropout, Linear (net.3), the head


def mlp_weights(data_dir: Path, seed: int = 0) -> dict[str, np.ndarray]:
    return dict(get_weights(build_model("mlp", preprocessor(data_dir).num_features, seed=seed)))


def evaluate_config(server: Server, server_round: int, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    from fedheart.protocol import task_settings
    from tests.unit.test_malicious_server import public_preprocessing

    return {**task_settings(server.cfg, public_preprocessing(server.data_dir)), "server-round": server_round,
            **(changes or {})}


# -- what leaves the hospital --------------------------------------------------------------------------------
def test_fedper_replies_carry_the_body_only_and_the_server_cannot_set_the_head(tmp_path: Path, data_dir: Path) -> None:
    h = hospital(tmp_path, data_dir, policy=None)
    server = Server([h], 1, data_dir, overrides=FEDPER)
    w0 = mlp_weights(data_dir)
    first = arrays_of(server.train(1, w0))
    assert set(first) == {k for k in w0 if not k.startswith(HEAD)}  # the head never leaves the hospital
    # Round 2: the server sends the aggregated body with a head of its choosing; the hospital trains with its
    # own head, so the reply does not depend on what the server put there.
    body = {**w0, **first}
    honest = arrays_of(server.train(2, {**body}))
    server2 = Server([h], 1, data_dir, overrides=FEDPER)  # the same run, the same hospital state, replayed
    server2.train(1, w0)
    crafted = arrays_of(server2.train(2, {**body, **{k: np.full_like(v, 7.0) for k, v in w0.items()
                                                      if k.startswith(HEAD)}}))
    assert set(crafted) == set(honest)
    assert all(np.array_equal(crafted[k], honest[k]) for k in honest)


def test_switching_the_method_off_does_not_release_the_personal_parts(tmp_path: Path, data_dir: Path) -> None:
    """After FedPer rounds, a train message with personalization=none trains what the server sent: the reply
    is the one a hospital without any personal state gives (the stored head is not in it, nor used)."""
    h = hospital(tmp_path, data_dir, policy=None)
    server = Server([h], 1, data_dir, overrides=FEDPER)
    w0 = mlp_weights(data_dir)
    server.train(1, w0)
    off = {"personalization.name": "none"}
    after = arrays_of(server.train(2, w0, changes=off))
    fresh = arrays_of(Server([h], 2, data_dir, overrides=FEDPER).train(2, w0, changes=off))
    assert set(after) == set(w0)
    assert all(np.array_equal(after[k], fresh[k]) for k in w0)


def test_fenda_replies_carry_the_global_extractor_only(tmp_path: Path, data_dir: Path) -> None:
    h = hospital(tmp_path, data_dir, policy=None)
    server = Server([h], 1, data_dir, overrides=FEDPER.replace("fedper", "fenda"))
    w0 = mlp_weights(data_dir)
    reply = arrays_of(server.train(1, w0))
    assert set(reply) == {"net.0.weight", "net.0.bias"}
    assert not np.array_equal(reply["net.0.weight"], w0["net.0.weight"])  # it trained
    final = metrics_of(server.send("evaluate", evaluate_config(server, 2), {**w0, **reply}))
    assert 0.0 <= final["personal-accuracy"] <= 1.0 and "personal-auc" in final
    assert final["personal-loss"] != pytest.approx(final["loss"])  # its own model, not the global one


def test_personal_metrics_are_released_after_the_last_round_only(tmp_path: Path, data_dir: Path) -> None:
    h = hospital(tmp_path, data_dir, policy=None)
    server = Server([h], 1, data_dir, overrides=FEDPER)
    w0 = mlp_weights(data_dir)
    server.train(1, w0)
    early = metrics_of(server.send("evaluate", evaluate_config(server, 1), w0))
    last = metrics_of(server.send("evaluate", evaluate_config(server, 2), w0))
    assert not [k for k in early if k.startswith("personal-")]
    assert {"personal-accuracy", "personal-auc", "personal-loss"} <= set(last)
    assert all(np.isscalar(v) for k, v in last.items() if k.startswith("personal-"))


# -- the methods ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("lam", "same"), [(10.0, True), (0.0, False)])
def test_ditto_pull_holds_the_personal_model_to_the_global_one(lam: float, same: bool, tmp_path: Path,
                                                               data_dir: Path) -> None:
    """lr * lam = 1: each pull lands the personal model on the global model; lam = 0: it trains on its own."""
    h = hospital(tmp_path, data_dir, policy=None)
    server = Server([h], 1, data_dir, overrides=f"personalization=ditto personalization.lr=0.1 "
                                                f"personalization.lam={lam} train.local_steps=5 rounds=1")
    from tests.unit.test_malicious_server import initial_weights

    w0 = initial_weights(data_dir)
    reply = accepted(server.train(1, w0))
    assert set(reply["arrays"].keys()) == set(w0)  # Ditto shares the whole global model
    final = metrics_of(server.send("evaluate", evaluate_config(server, 1), w0))
    if same:
        assert final["personal-loss"] == pytest.approx(final["loss"], abs=1e-6)
    else:
        assert abs(final["personal-loss"] - final["loss"]) > 1e-3


@pytest.mark.parametrize("layers", [1, 2])
def test_fenda_exports_as_one_mlp_with_the_same_function(layers: int) -> None:
    spec = ModelSpec("mlp", {"hidden": 4, "layers": layers, "dropout": 0.1})
    net = Fenda(build_model(spec, 5, seed=1), build_model(spec, 5, seed=2))
    torch.nn.init.normal_(net.head.weight)
    x = np.random.default_rng(0).normal(size=(7, 5))
    net.eval()
    with torch.no_grad():
        expected = net(torch.as_tensor(x, dtype=torch.float32)).numpy()
    exported_spec, weights = as_mlp(net, spec)
    assert exported_spec.params["hidden"] == 8
    h = x
    for i in range(layers):  # the exported MLP by hand: Linear then ReLU per hidden layer, then the head
        h = np.maximum(h @ weights[f"net.{3 * i}.weight"].T + weights[f"net.{3 * i}.bias"], 0.0)
    got = (h @ weights[f"net.{3 * layers}.weight"].T + weights[f"net.{3 * layers}.bias"])[:, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    model = build_model(exported_spec, 5)
    set_weights(model, weights)  # a plain registry model holds it: predict and ONNX take it as any run's model


def test_shared_keys_leave_out_the_head_for_fedper_and_fenda_only() -> None:
    keys = list(get_weights(build_model("mlp", 3)))
    layers = ["net.0", "net.3"]
    assert shared_keys(PersonalSettings("fedper"), keys, layers) == ["net.0.weight", "net.0.bias"]
    assert shared_keys(PersonalSettings("fenda"), keys, layers) == ["net.0.weight", "net.0.bias"]
    assert shared_keys(PersonalSettings("ditto"), keys, layers) == keys


@pytest.mark.parametrize(("overrides", "key"), [
    ("personalization=fedper", "model.name"),  # logistic regression has no body to share
    ("personalization=fenda model=mlp strategy=fedadam", "strategy.name"),
    ("personalization=fedper model=mlp privacy=central-fixed privacy.noise_multiplier=1", "privacy.mode"),
    ("personalization=ditto personalization.lam=-1", "personalization.lam"),
])
def test_a_method_the_run_cannot_carry_is_refused_with_its_key(overrides: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides)


# -- privacy, state folder, the model a hospital uses -----------------------------------------------------------
def _steps(h: Any) -> int:
    [book] = books(h.state)
    [run] = book.runs.values()
    return sum(n for _, q, n in run.history if q < 1.0), run.epsilon  # type: ignore[return-value]


@pytest.mark.parametrize("method", ["ditto", "none"])
def test_personal_dp_sgd_steps_are_charged_to_the_same_budget(method: str, tmp_path: Path, data_dir: Path) -> None:
    h = hospital(tmp_path, data_dir, STRICT)
    server = Server([h], 5, data_dir, overrides=f"privacy=dp-sgd privacy.epsilon=1.0 train.local_steps=5 rounds=2 "
                                                f"personalization={method}")
    accepted(server.stats())
    from tests.unit.test_malicious_server import initial_weights

    for r in (1, 2):
        accepted(server.train(r, initial_weights(data_dir)))
    steps, epsilon = _steps(h)
    assert steps == 2 * 5 * (2 if method == "ditto" else 1)  # Ditto: a personal model's 5 steps per round too
    assert epsilon <= STRICT["privacy"]["max-epsilon-per-run"] + 1e-9


def test_the_personal_model_is_kept_in_the_state_folder_and_predicts(tmp_path: Path, data_dir: Path) -> None:
    h = hospital(tmp_path, data_dir, policy=None)
    state = tmp_path / "state"
    node = {"data-path": str(h.data), "hospital": h.name, "state-dir": str(state)}
    w0 = mlp_weights(data_dir)
    Server([node], 9, data_dir, overrides=FEDPER).train(1, w0)
    assert (state / "personal" / "run-9" / "state.npz").is_file()
    # A restarted SuperNode (fresh Context) reads the head back from the state folder.
    server = Server([node], 9, data_dir, overrides=FEDPER)
    final = metrics_of(server.send("evaluate", evaluate_config(server, 2), w0))
    folder = state / "personal" / "run-9"
    with np.load(folder / "state.npz") as stored:
        head = {k: stored[k] for k in stored.files}
    assert set(head) == {"net.3.weight", "net.3.bias"}
    model = load_model(folder)  # what `fedheart predict` and `fedheart export` read
    table = read_table(h.data)
    got = model.probabilities(table.frame)
    reference = build_model("mlp", preprocessor(data_dir).num_features)
    set_weights(reference, {**w0, **head})
    with torch.no_grad():
        reference.eval()
        logits = reference(torch.as_tensor(preprocessor(data_dir).transform(table.frame), dtype=torch.float32))
    np.testing.assert_allclose(got, torch.sigmoid(logits).numpy(), rtol=1e-4, atol=1e-5)
    assert 0.0 <= final["personal-accuracy"] <= 1.0


def test_the_summary_shows_each_kind_of_model_and_skips_missing_ones() -> None:
    final = {"a": {"accuracy": 0.8, "auc": 0.9, "personal-accuracy": 0.85, "personal-auc": 0.88},
             "b": {"accuracy": 0.6, "auc": 0.7, "personal-accuracy": 0.75, "personal-auc": 0.8}}
    text, data = personal_summary("ditto", final, {"a": {"local-accuracy": 0.7, "local-auc": 0.75}})
    assert data["means"]["personal-accuracy"] == pytest.approx((0.85 + 0.75) / 2)
    assert data["means"]["local-only-accuracy"] == pytest.approx(0.7)  # b has no baseline (e.g. DP-SGD)
    assert data["hospitals"]["b"]["local-only-auc"] is None
    assert "| b | 0.600 | 0.750 | n/a |" in text


def test_finetuning_that_does_not_help_on_held_back_training_rows_keeps_the_global_model(tmp_path: Path,
                                                                                          data_dir: Path) -> None:
    """personalization.validation: a fine-tuning that diverges (lr 50) loses on the held-back training rows, so
    the personal model is the global one; without the check it is the diverged model."""
    h = hospital(tmp_path, data_dir, policy=None)
    common = "personalization=finetune personalization.lr=50 personalization.steps=50 train.local_steps=5 rounds=1"
    from tests.unit.test_malicious_server import initial_weights

    w0 = initial_weights(data_dir)
    results = {}
    for validation in (0.2, 0.0):
        server = Server([h], 1, data_dir, overrides=f"{common} personalization.validation={validation}")
        results[validation] = metrics_of(server.send("evaluate", evaluate_config(server, 1), w0))
    assert results[0.2]["personal-kept-global"] == 1.0
    assert results[0.2]["personal-loss"] == pytest.approx(results[0.2]["loss"], abs=1e-9)
    assert results[0.0]["personal-loss"] > results[0.0]["loss"] + 0.1


def test_the_validation_check_is_refused_under_dp() -> None:
    with pytest.raises(ConfigError, match=r"personalization\.validation"):
        load_config("personalization=finetune personalization.validation=0.2 privacy=dp-sgd privacy.epsilon=1")
