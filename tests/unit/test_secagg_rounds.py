"""SecAgg+ rounds in process: Flower's real workflow and mod, our real ClientApp and hospitals.

A LoopbackGrid delivers each message to the ClientApp in this process (no SuperLink, no Ray), so
one round of plain FedAvg and one of SecAgg+ see exactly the same hospital updates (training is
seeded by round and hospital) and their aggregates can be compared value by value.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, Strategy

import client_app.app as client
from client_app.secagg import FITINS_CONFIG, secaggplus_train_mod
from fedheart.config import AppConfig, load_config
from fedheart.secagg import quantization_tolerance
from launcher.loopback import FailWhen, LoopbackGrid
from server_app.federation import Federation, FederationError
from server_app.records import from_arrays
from server_app.strategies import build_strategy


@pytest.fixture(autouse=True)
def _env(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDHEART_DATA_DIR", str(data_dir))
    monkeypatch.setenv("FEDHEART_OUTPUT_DIR", str(tmp_path / "outputs"))


class RecordingGrid(LoopbackGrid):
    """Keeps every train reply the server receives."""

    train_replies: list[Message]

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        replies = list(super().send_and_receive(messages, timeout=timeout))
        self.train_replies = getattr(self, "train_replies", []) + [
            r for r in replies if r.metadata.message_type == "train"]
        return replies


def at_masking_stage(*nodes: int) -> FailWhen:
    """These nodes fail when asked for their (masked) update."""
    return lambda node, msg: node in nodes and FITINS_CONFIG in msg.content.config_records


def start(overrides: str, fail: FailWhen | None = None, app: ClientApp = client.app,
          wrap: Callable[[Strategy], Strategy] | None = None) -> tuple[Federation, RecordingGrid, ArrayRecord]:
    """A federation of the four hospitals after its start (statistics, initial model); its initial arrays.
    ``aggregation=secagg`` in the overrides makes its training step SecAgg+."""
    cfg: AppConfig = load_config(f"{overrides} train.local_steps=5")  # few steps: fast, still a real update
    grid = RecordingGrid(app, [{"partition-id": i, "num-partitions": 4} for i in range(4)], fail=fail)
    strategy = build_strategy(cfg)
    federation = Federation(cfg, grid, wrap(strategy) if wrap else strategy, run_id=1)
    return federation, grid, federation.start()


def max_diff(a: ArrayRecord, b: ArrayRecord) -> float:
    x, y = from_arrays(a), from_arrays(b)
    return max(float(np.max(np.abs(x[k] - y[k]))) for k in x)


def tolerance(federation: Federation, names: set[str]) -> float:
    rows = [float(h.train_rows) for h in federation.hospitals.values() if h.name in names]
    return quantization_tolerance(federation.cfg.aggregation, rows)


def test_secagg_round_equals_plain_fedavg_within_quantization_tolerance() -> None:
    plain, _, arrays = start("rounds=2")
    first = plain.run_round(1, arrays)
    expected, plain_rows = first.arrays, first.train_rows
    secure, grid, arrays2 = start("rounds=2 aggregation=secagg")
    assert max_diff(arrays, arrays2) == 0.0  # same seed, same initial model
    result = secure.run_round(1, arrays2)
    got, rows = result.arrays, result.train_rows

    tol = tolerance(secure, {"cleveland", "hungarian", "switzerland", "va"})
    assert 0.0 < max_diff(got, expected) <= tol  # quantised (not the plain path), within the bound
    assert max_diff(expected, arrays) > 1000 * tol  # the comparison is not vacuous: the model moved
    # Each hospital's own metrics still reach the server (through the legacy FitRes), unchanged.
    assert {r["hospital"]: r["train-loss"] for r in rows} == {r["hospital"]: r["train-loss"] for r in plain_rows}
    # The server never received one hospital's update: train replies carry no arrays at all.
    assert len(grid.train_replies) == 4 * 4  # four SecAgg+ stages x four hospitals
    assert all(len(rec) == 0 for r in grid.train_replies for rec in r.content.array_records.values())
    [row] = [r for r in secure.run_dir.read_metrics() if r["phase"] == "secagg"]
    assert (row["status"], row["stage"], row["active"], row["sampled"]) == ("completed", "unmask", 4, 4)


def test_train_metrics_of_a_dp_mod_reach_the_server_under_secagg() -> None:
    def add_epsilon(msg: Message, context: Context, call_next):  # type: ignore[no-untyped-def]
        reply = call_next(msg, context)
        next(iter(reply.content.metric_records.values()))["epsilon"] = 0.25
        return reply

    app = ClientApp()
    app.train(mods=[secaggplus_train_mod, add_epsilon])(client.train)
    app.query("stats")(client.statistics)
    secure, _, arrays = start("rounds=2 aggregation=secagg", app=app)
    rows = secure.run_round(1, arrays).train_rows
    assert [r["epsilon"] for r in rows] == [0.25] * 4


def test_client_side_clipping_dp_works_behind_secagg() -> None:
    """Flower's DP wrapper (client-side fixed clipping) and fixedclipping_mod, under SecAgg+ and without."""
    app = ClientApp()
    app.train(mods=[secaggplus_train_mod, fixedclipping_mod])(client.train)
    app.query("stats")(client.statistics)

    def dp(strategy: Strategy) -> Strategy:  # noise 0: the result must be the clipped FedAvg exactly
        return DifferentialPrivacyClientSideFixedClipping(strategy, noise_multiplier=0.0, clipping_norm=0.01,
                                                          num_sampled_clients=4)

    plain, _, arrays = start("rounds=2", app=app, wrap=dp)
    expected = plain.run_round(1, arrays).arrays
    secure, _, arrays = start("rounds=2 aggregation=secagg", app=app, wrap=dp)
    got = secure.run_round(1, arrays).arrays
    tol = tolerance(secure, {"cleveland", "hungarian", "switzerland", "va"})
    assert max_diff(got, expected) <= tol
    step = {k: v - from_arrays(arrays)[k] for k, v in from_arrays(expected).items()}
    # Clipped: the unclipped step moves a value by > 0.03 (first test), this one by at most the norm.
    assert np.sqrt(sum(float(np.sum(d**2)) for d in step.values())) <= 0.01 + 1e-6


def test_one_dropout_is_recovered_and_equals_fedavg_of_the_others() -> None:
    plain, _, arrays = start("rounds=2", fail=lambda node, msg: node == 4 and msg.metadata.message_type == "train")
    expected = plain.run_round(1, arrays).arrays
    secure, _, arrays = start("rounds=2 aggregation=secagg", fail=at_masking_stage(4))
    result = secure.run_round(1, arrays)
    got, rows = result.arrays, result.train_rows
    contributors = {r["hospital"] for r in rows}
    assert len(contributors) == 3
    assert max_diff(got, expected) <= tolerance(secure, contributors)
    [row] = [r for r in secure.run_dir.read_metrics() if r["phase"] == "secagg"]
    assert (row["status"], row["active"], row["sampled"]) == ("completed", 3, 4)


def test_a_halted_round_is_logged_as_failed_and_fails_the_run_past_the_limit() -> None:
    secure, _, arrays = start("rounds=3 aggregation=secagg aggregation.max_failed_rounds=1",
                              fail=at_masking_stage(3, 4))
    result = secure.run_round(1, arrays)  # 2 of 4 left < threshold 3: halts
    same, rows = result.arrays, result.train_rows
    assert rows == [] and max_diff(same, arrays) == 0.0  # model unchanged, nothing aggregated
    [row] = [r for r in secure.run_dir.read_metrics() if r["phase"] == "secagg"]
    assert (row["status"], row["stage"], row["active"]) == ("halted", "collect_masked_vectors", 2)
    with pytest.raises(FederationError, match=r"aggregation.max_failed_rounds=1.*round 2: SecAgg\+ halted"):
        secure.run_round(2, arrays)


def test_a_resumed_run_counts_rounds_that_halted_before() -> None:
    secure, _, arrays = start("rounds=3 aggregation=secagg aggregation.max_failed_rounds=1",
                              fail=at_masking_stage(3, 4))
    secure.run_dir.append_metrics([{"round": 1, "phase": "secagg", "hospital": "all", "status": "halted"}])
    with pytest.raises(FederationError, match=r"2 round\(s\) \[1, 2\]"):
        secure.run_round(2, arrays)


def test_a_hospital_refuses_an_update_secagg_would_clip() -> None:
    secure, _, arrays = start("rounds=2 aggregation=secagg aggregation.clipping_range=0.01")
    with pytest.raises(FederationError, match=r"collect_masked_vectors.*aggregation.clipping_range=0.01"):
        secure.run_round(1, arrays)
