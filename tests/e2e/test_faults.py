"""Faults injected on the real local deployment: the session's ``deployment`` (tests/e2e/conftest.py),
a TLS SuperLink with SuperNode authentication and one ``flower-supernode`` per hospital, each with the
hospital's launcher (``python -m launcher.hospital``) beside it.

One seeded 3-round run carries the faults and a resumed run finishes it (the fixture ``faults``):

1. round 1: switzerland's SuperNode is SIGKILLed with its launcher and ClientApp (a crashed hospital
   machine) right after it pulled its train message; it is restarted with the same key and file as
   soon as the SuperLink counts it offline (Flower refuses it before: ``Deployment.restart_node``),
   and its launcher with it;
2. round 1 too: hungarian's launcher alone is SIGKILLed while its forked ClientApp runs the train
   message (the child dies with it); the SuperNode stays connected, answers the message with Flower's
   "ClientApp stopped responding" once the task's token expires, and the launcher is restarted at once;
3. once round 1 is checkpointed and round 2's train messages are being pulled, the ServerApp process
   (``flwr-serverapp``, started by the SuperLink's SuperExec) is SIGKILLed; a new run with
   ``resume=<run dir>`` finishes the run (round 2 again, then round 3);
4. in the resumed run's round 3, va's ClientApp process (the launcher's forked child) is SIGSTOPped
   as soon as it runs its train message (a hospital slower than ``round_timeout`` whose SuperNode
   stays connected) and SIGCONTed once the server has moved on to evaluation.

No sleeps: every step waits for a real condition with a deadline (Flower's ``Receiving: train
message`` lines in a SuperNode's log, a launcher's ``child PID runs its train message`` lines and its
children, processes under the SuperLink, the run folder's metrics and checkpoint, ``flwr ls``,
``flwr supernode list``). The uninterrupted reference is the same seeded configuration run in process
over LoopbackGrid, with the same three hospitals failing their train message in the same rounds (a
missing reply and an error reply are aggregated alike). Whatever happens, the fixture leaves the
deployment as it found it: four SuperNodes and their launchers running, the SuperNodes online.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message

from fedheart.schema import HOSPITALS
from launcher import processes
from launcher.deploy import COMPLETED, Deployment
from launcher.flower import FlowerError, list_supernodes, run_status, stop_run
from tests.e2e.fault_scenario import (
    KILLED,
    LAUNCHER_KILLED,
    OVERRIDES,
    ROUND_TIMEOUT,
    RUN_NAME,
    SLOW,
    FaultRun,
    _inject,
)
from tests.e2e.runs import TOLERANCE, _final, _rounds

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def faults(deployment: Deployment) -> Iterator[FaultRun]:
    assert deployment.link is not None and set(deployment.launchers) == set(deployment.nodes)
    deployment.wait_online()  # whatever ran before, start from four nodes online
    out = FaultRun(run_dir=deployment.output_dir / RUN_NAME)
    stopped: list[int] = []
    try:
        _inject(deployment, out, stopped)
    finally:  # leave the deployment as found: nothing stopped, every node running and online, no run left
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for name, node in deployment.nodes.items():
            if node.process is None or node.process.popen.poll() is not None:
                deployment.restart_node(name)
            elif not deployment.launchers[name].running:
                deployment.restart_launcher(name)
        for run_id in (out.first_id, out.resumed_id):
            if run_id:
                with contextlib.suppress(FlowerError):
                    stop_run(deployment.link, run_id)
        deployment.wait_online()
        print(f"\nfault timeline (s): {out.timeline}; {SLOW} waited {out.slow_wait_s:.1f}s; {LAUNCHER_KILLED}'s "
              f"children ended {out.launcher_children_gone_s}s after its launcher; "
              f"run 1's ClientApps still running once it was finished: {out.leftover_clientapps or 'none'}")
    yield out


def test_a_supernode_killed_mid_round_is_left_out_then_rejoins(faults: FaultRun) -> None:
    assert not faults.killed_reply_sent, f"{KILLED} was killed too late: its round-1 reply had left"
    everyone = sorted(h.key for h in HOSPITALS)
    assert faults.rows("train", 1) == sorted(set(everyone) - {KILLED, LAUNCHER_KILLED}), faults.timeline
    assert faults.rows("train", 2) == everyone, "the restarted SuperNode trains again in round 2 (resumed run)"
    assert faults.rows("evaluate", 2) == everyone


def test_a_launcher_killed_mid_round_is_left_out_then_trains_again(faults: FaultRun) -> None:
    assert faults.launcher_children, f"{LAUNCHER_KILLED}'s launcher had no ClientApp child when it was killed"
    assert faults.launcher_children_gone_s is not None, f"{LAUNCHER_KILLED}'s ClientApp outlived its launcher"
    assert not faults.launcher_reply_sent, f"{LAUNCHER_KILLED}'s launcher was killed too late: its reply had left"
    assert LAUNCHER_KILLED not in faults.rows("train", 1), faults.timeline  # the round went on without it
    # Its SuperNode answered the lost task itself (its token expired) and served the restarted launcher.
    assert LAUNCHER_KILLED in faults.rows("train", 2) and LAUNCHER_KILLED in faults.rows("evaluate", 2)


def test_a_hospital_slower_than_round_timeout_is_left_out_by_the_timeout(faults: FaultRun) -> None:
    assert faults.slow_stopped, f"{SLOW}'s ClientApp was not stopped"
    assert not faults.slow_reply_sent, f"{SLOW}'s round-3 reply left before the server moved on"
    assert faults.slow_late_reply, f"once continued, {SLOW} answers round 3's train message (too late)"
    # The round ended by the server's timeout, not by Flower declaring the node offline: the
    # SuperNode kept its heartbeats (only its ClientApp was stopped) and was online all along.
    assert faults.slow_status_at_release == "online"
    assert faults.slow_wait_s >= ROUND_TIMEOUT - 5, faults.slow_wait_s  # pulled up to a few s after the push
    everyone = sorted(h.key for h in HOSPITALS)
    assert faults.rows("train", 3) == sorted(set(everyone) - {SLOW}), faults.timeline
    assert faults.rows("evaluate", 3) == everyone, "once continued, the slow hospital evaluates round 3"


def _reference(data_dir: Path) -> dict[str, np.ndarray]:
    """The uninterrupted run in process: same seeded configuration, the same hospitals missing the same rounds."""
    import client_app.app as client
    from fedheart.config import load_config
    from launcher.loopback import LoopbackGrid
    from server_app.federation import Federation
    from server_app.strategies import build_strategy

    cfg = load_config([*OVERRIDES, "output.run_name=reference"])
    order = list(cfg.data.hospitals)
    missing = {(order.index(KILLED) + 1, 1), (order.index(LAUNCHER_KILLED) + 1, 1),
               (order.index(SLOW) + 1, 3)}  # (loopback node id, round)

    def fail(node: int, msg: Message) -> bool:
        return (msg.metadata.message_type == "train"
                and (node, int(msg.content.config_records["config"]["server-round"])) in missing)

    grid = LoopbackGrid(client.app, [{"partition-id": i, "num-partitions": len(order)} for i in range(len(order))],
                        fail=fail)
    federation = Federation(cfg, grid, build_strategy(cfg), run_id=1)
    federation.run()
    return _final(federation.run_dir.path)


def test_a_killed_serverapp_is_resumed_to_the_model_of_an_uninterrupted_run(
        faults: FaultRun, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kill: exactly the one ServerApp, mid round 2, with round 1 checkpointed.
    assert faults.serverapps_at_kill == 1
    assert faults.rounds_at_kill == [1] and faults.checkpoint_at_kill == 1
    # The dead run does not hang: the SuperLink fails it when the ServerApp's heartbeats stop.
    assert faults.first["status"] == "finished:failed", faults.first
    assert "heartbeat" in str(faults.first.get("status-details")).lower(), faults.first
    # The resumed run completes the run: round 2 (the interrupted one) again, no round lost or doubled.
    assert faults.resumed["status"] == COMPLETED, faults.resumed.get("status-details")
    assert _rounds(faults.run_dir) == [1, 2, 3]
    assert json.loads((faults.run_dir / "summary.json").read_text())["rounds"] == 3
    # Same final model as the uninterrupted seeded run.
    monkeypatch.setenv("FEDHEART_DATA_DIR", str(data_dir))
    monkeypatch.setenv("FEDHEART_OUTPUT_DIR", str(tmp_path))
    a, b = _reference(data_dir), _final(faults.run_dir)
    assert a.keys() == b.keys()
    worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    print(f"\nmax |resumed deployment - in-process reference| = {worst:.3g}")
    assert worst <= TOLERANCE, f"the resumed model differs from the uninterrupted one by {worst}"


def test_the_deployment_is_left_healthy(deployment: Deployment, faults: FaultRun) -> None:
    assert deployment.link is not None
    assert all(n.process and n.process.popen.poll() is None for n in deployment.nodes.values())
    assert all(launcher.running for launcher in deployment.launchers.values())
    online = {str(n["node-id"]) for n in list_supernodes(deployment.link) if n.get("status") == "online"}
    assert online == set(deployment.node_ids.values())
    assert not any(processes.stopped(pid) for name in deployment.nodes for pid in deployment.clientapp_pids(name))
    for run_id in (faults.first_id, faults.resumed_id):
        assert str(run_status(deployment.link, run_id)["status"]).startswith("finished:")
