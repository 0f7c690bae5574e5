"""Faults in process: real ClientApp and Federation over a LoopbackGrid (real Flower serialisation).

- a hospital that fails mid-round: the round aggregates the others (>= min_replies);
- too few replies: the run stops with the reason, it does not hang;
- the server dying mid-run: ``resume=<run dir>`` finishes the run, at most one round repeated,
  with the same final model as an uninterrupted run (training is seeded per round and hospital).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Context, Message, RecordDict

import client_app.app as client
from fedheart.config import load_config
from launcher.loopback import FailWhen, LoopbackGrid
from server_app.federation import Federation, FederationError, error_message
from server_app.strategies import build_strategy

TOLERANCE = 1e-6
BASE = "rounds=2 train.local_steps=5 baselines=false"


@pytest.fixture(autouse=True)
def _env(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDHEART_DATA_DIR", str(data_dir))
    monkeypatch.setenv("FEDHEART_OUTPUT_DIR", str(tmp_path / "outputs"))


def _federation(overrides: str, fail: FailWhen | None = None) -> Federation:
    cfg = load_config(f"{BASE} {overrides}")
    grid = LoopbackGrid(client.app, [{"partition-id": i, "num-partitions": 4} for i in range(4)], fail=fail)
    return Federation(cfg, grid, build_strategy(cfg), run_id=1)


def _train_in_round(nodes: set[int], server_round: int) -> FailWhen:
    def fail(node: int, msg: Message) -> bool:
        return (node in nodes and msg.metadata.message_type == "train"
                and int(msg.content.config_records["config"]["server-round"]) == server_round)
    return fail


def _final(run_dir: Path) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in torch.load(run_dir / "final_model.pt", weights_only=True).items()}


def test_a_hospital_failing_mid_round_leaves_the_round_to_the_others() -> None:
    federation = _federation("output.run_name=dropout", _train_in_round({2}, 2))
    federation.run()
    rows = federation.run_dir.read_metrics()
    trained = {r["round"]: sorted(r["hospital"] for r in rows if r["phase"] == "train" and r["round"] == rnd)
               for rnd in (1, 2) for r in rows if r["round"] == rnd}
    assert len(trained[1]) == 4 and len(trained[2]) == 3, trained
    assert federation.hospitals[2].name not in trained[2]
    assert federation.history.last_round == 2


def test_too_few_replies_stop_the_run_with_the_reason() -> None:
    federation = _federation("output.run_name=stop min_replies=3", _train_in_round({1, 2}, 1))
    with pytest.raises(FederationError, match=r"round 1: only 2 hospital\(s\) returned an update, at least 3 "
                                              r"required \(min_replies\).*failed on purpose"):
        federation.run()


def test_resume_after_a_server_crash_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    whole = _federation("output.run_name=whole")
    whole.run()
    crashed = _federation("output.run_name=crashed min_replies=4", _train_in_round({1}, 2))  # dies in round 2
    with pytest.raises(FederationError):
        crashed.run()
    run_dir = crashed.run_dir.path
    assert {r["round"] for r in crashed.run_dir.read_metrics()} == {1}, "round 1 checkpointed, round 2 not"
    resumed = _federation(f"output.run_name=crashed resume={run_dir}")
    resumed.run()
    rows = resumed.run_dir.read_metrics()
    assert sorted(r["round"] for r in rows if r["phase"] == "federation") == [1, 2], "no round lost or doubled"
    a, b = _final(whole.run_dir.path), _final(run_dir)
    assert a.keys() == b.keys()
    worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    assert worst <= TOLERANCE, f"resumed model differs from the uninterrupted one by {worst}"


class RejoiningGrid(LoopbackGrid):
    """After round 1, node 3's SuperNode restarts: its context (same data) comes back as node 7."""

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        messages = list(messages)
        replies = list(super().send_and_receive(messages, timeout=timeout))
        if 3 in self.contexts and any(m.metadata.message_type == "evaluate" for m in messages):
            old = self.contexts.pop(3)
            self.contexts[7] = Context(run_id=old.run_id, node_id=7, node_config=old.node_config,
                                       state=RecordDict(), run_config={})
        return replies


def test_a_restarted_supernode_rejoins_under_its_hospital_name() -> None:
    cfg = load_config(f"{BASE} output.run_name=rejoin")
    grid = RejoiningGrid(client.app, [{"partition-id": i, "num-partitions": 4} for i in range(4)])
    federation = Federation(cfg, grid, build_strategy(cfg), run_id=1)
    federation.run()
    rows = federation.run_dir.read_metrics()
    names: dict[tuple[int, str], list[str]] = {}
    for r in rows:
        names.setdefault((r["round"], r["phase"]), []).append(r["hospital"])
    names = {k: sorted(v) for k, v in names.items()}
    assert names[1, "train"] == names[2, "train"] == sorted(cfg.data.hospitals), names
    assert names[2, "evaluate"] == sorted(cfg.data.hospitals)
    assert 7 in federation.hospitals and 3 not in federation.hospitals


class DepartingGrid(LoopbackGrid):
    """After round 1, node 3's SuperNode is gone for good: the node list no longer has it."""

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        messages = list(messages)
        replies = list(super().send_and_receive(messages, timeout=timeout))
        if any(m.metadata.message_type == "evaluate" for m in messages):
            self.contexts.pop(3, None)
        return replies


def _departing(overrides: str) -> Federation:
    cfg = load_config(f"{BASE} round_timeout=1 {overrides}")
    grid = DepartingGrid(client.app, [{"partition-id": i, "num-partitions": 4} for i in range(4)])
    return Federation(cfg, grid, build_strategy(cfg), run_id=1)


def test_a_hospital_gone_for_good_leaves_the_rounds_to_the_others_after_round_timeout(
        caplog: pytest.LogCaptureFixture) -> None:
    federation = _departing("output.run_name=departed min_replies=2")
    federation.run()  # Flower's own sample_nodes would wait for the fourth node forever
    rows = federation.run_dir.read_metrics()
    gone = federation.hospitals[3].name
    for phase in ("train", "evaluate"):
        second = sorted(r["hospital"] for r in rows if r["phase"] == phase and r["round"] == 2)
        assert second == sorted(set(federation.cfg.data.hospitals) - {gone}), (phase, second)  # no healthy one left out
    assert "round 2 (train): only 3 of min_hospitals=4 hospitals online" in caplog.text


@pytest.mark.parametrize(("overrides", "reason"), [
    ("min_replies=4", r"at least 4 required \(min_replies\)"),
    ("privacy=central-fixed", r"privacy=central-fixed accounts for every hospital"),
])
def test_too_few_hospitals_online_stop_the_run_with_the_reason(overrides: str, reason: str) -> None:
    federation = _departing(f"output.run_name=stopped {overrides}")
    with pytest.raises(FederationError, match=r"round 2 \(train\): only 3 of min_hospitals=4 hospitals online "
                                              r"after waiting 1 s \(round_timeout\); " + reason):
        federation.run()


def test_a_failed_reply_is_reported_by_its_message_not_its_traceback() -> None:
    ray_reason = ("<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'ray::ClientAppActor.run() (pid=1)\n"
                  "Traceback (most recent call last):\n  File \"x.py\", line 1, in run\n"
                  "flwr.clientapp.client_app.ClientAppException: \n"
                  "Exception ClientAppException occurred. Message: processed.va.data not found in /data.'>")
    assert error_message(ray_reason) == "processed.va.data not found in /data."
    assert error_message("ValueError: partition 4 has no hospital") == "ValueError: partition 4 has no hospital"
    assert error_message("Traceback (most recent call last):\n  ...\nKeyError: 'arrays'\n") == "KeyError: 'arrays'"
