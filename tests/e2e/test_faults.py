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
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Message

from fedheart.runs import load_checkpoint
from fedheart.schema import HOSPITALS
from launcher import processes
from launcher.deploy import COMPLETED, Deployment
from launcher.flower import (
    FlowerError,
    SuperNode,
    list_supernodes,
    run_status,
    stop_run,
    submit_run,
    wait_for_run,
    wait_until,
)

pytestmark = pytest.mark.e2e

KILLED = "switzerland"  # SuperNode SIGKILLed in round 1, restarted
LAUNCHER_KILLED = "hungarian"  # launcher SIGKILLed in round 1 (its SuperNode stays), restarted
SLOW = "va"  # ClientApp SIGSTOPped in the resumed run's round 3
ROUND_TIMEOUT = 45  # s; a normal phase takes 10-30 s on the shared 2-core machine
OVERRIDES = ["rounds=3", "seed=0", "train.local_steps=5", "baselines=false", "min_replies=2",
             f"round_timeout={ROUND_TIMEOUT}"]
RUN_NAME = "e2e-faults"
STEP_S = 300  # deadline of each step (generous: other jobs share the two cores)
TOLERANCE = 1e-6
RUN_LINE = re.compile(r"\[RUN (\d+)\]")  # max abs difference of the final weights, deployment vs in-process reference


def _messages(node: SuperNode, action: str, kind: str, run_id: str) -> int:
    """How many ``kind`` messages of run ``run_id`` the SuperNode has pulled (``Receiving``) or answered
    (``Sending``), from its log, where Flower writes ``[RUN <id>]`` on the line before each."""
    assert node.process is not None
    count, run = 0, None
    for line in node.process.log_path.read_text(errors="replace").splitlines():
        if m := RUN_LINE.search(line):
            run = m.group(1)
        elif f"{action}: {kind} message" in line and run == run_id:
            count += 1
    return count


def _received(node: SuperNode, kind: str, run_id: str) -> int:
    return _messages(node, "Receiving", kind, run_id)


def _sent(node: SuperNode, kind: str, run_id: str) -> int:
    return _messages(node, "Sending", kind, run_id)


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's complete lines (it may be being appended to)."""
    path = run_dir / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n") and line.strip()]


def _rounds(run_dir: Path) -> list[int]:
    return [r["round"] for r in _metrics(run_dir) if r["phase"] == "federation"]


def _checkpoint_round(run_dir: Path) -> int | None:
    return int(load_checkpoint(run_dir)["round"]) if (run_dir / "checkpoint.pt").exists() else None


@dataclass
class FaultRun:
    run_dir: Path
    first_id: str = ""
    resumed_id: str = ""
    first: dict[str, Any] = field(default_factory=dict)  # `flwr ls` record of the run whose ServerApp died
    resumed: dict[str, Any] = field(default_factory=dict)
    killed_reply_sent: bool = True
    launcher_children: list[int] = field(default_factory=list)  # its ClientApp children when it was killed
    launcher_reply_sent: bool = True  # its round-1 train reply had left when the launcher was killed
    launcher_children_gone_s: float | None = None  # how soon they ended after the kill (None: not within 10 s)
    serverapps_at_kill: int = 0
    rounds_at_kill: list[int] = field(default_factory=list)
    checkpoint_at_kill: int | None = None
    leftover_clientapps: dict[str, list[str]] = field(default_factory=dict)  # run 1's, once it is finished
    slow_stopped: list[int] = field(default_factory=list)  # ClientApp pids SIGSTOPped
    slow_reply_sent: bool = True  # its round-3 train reply left before the server moved on
    slow_late_reply: bool = False  # ... and after it was continued
    slow_wait_s: float = 0.0  # from the slow node pulling its train message to the others pulling evaluate
    slow_status_at_release: str = ""  # `flwr supernode list` status of the slow node then
    timeline: dict[str, float] = field(default_factory=dict)

    def mark(self, what: str, t0: float) -> None:
        self.timeline[what] = round(time.monotonic() - t0, 1)

    def rows(self, phase: str, server_round: int) -> list[str]:
        return sorted(r["hospital"] for r in _metrics(self.run_dir)
                      if r["phase"] == phase and r["round"] == server_round)


def _kill_in_round_1(deployment: Deployment, out: FaultRun, t0: float) -> None:
    """Faults 1 and 2, watched together (both hospitals pull their train message within seconds):
    switzerland's machine crashes right after its SuperNode pulled it; hungarian's launcher crashes
    while its child runs it."""
    first, killed, hurt = out.first_id, deployment.nodes[KILLED], deployment.nodes[LAUNCHER_KILLED]
    launcher = deployment.launchers[LAUNCHER_KILLED]
    done: set[str] = set()

    def both_killed() -> bool:
        if KILLED not in done and _received(killed, "train", first) >= 1:
            deployment.kill_node(KILLED)
            out.killed_reply_sent = _sent(killed, "train", first) > 0
            done.add(KILLED)
            out.mark(f"{KILLED} SIGKILLed with its launcher (round 1 train)", t0)
        running = [t.pid for t in launcher.tasks() if t.run == first and t.message == "train"]
        if LAUNCHER_KILLED not in done and running:  # (a child already ended shows as killed too late)
            out.launcher_children = deployment.kill_launcher(LAUNCHER_KILLED)
            killed_at = time.monotonic()
            out.launcher_reply_sent = _sent(hurt, "train", first) > 0
            done.add(LAUNCHER_KILLED)
            out.mark(f"{LAUNCHER_KILLED}'s launcher SIGKILLed (round 1 train, child {running[-1]})", t0)
            with contextlib.suppress(FlowerError):
                wait_until(lambda: all(processes.gone(p) for p in out.launcher_children), 10, "its children end",
                           max_delay=0.05)
                out.launcher_children_gone_s = round(time.monotonic() - killed_at, 2)
            deployment.restart_launcher(LAUNCHER_KILLED)
            out.mark(f"{LAUNCHER_KILLED}'s launcher restarted", t0)
        return len(done) == 2

    wait_until(both_killed, STEP_S, f"{KILLED} pulls and {LAUNCHER_KILLED}'s child runs its round-1 train message",
               max_delay=0.05)


def _inject(deployment: Deployment, out: FaultRun, stopped: list[int]) -> None:
    assert deployment.link is not None
    link, nodes, t0 = deployment.link, deployment.nodes, time.monotonic()
    slow, slow_launcher = nodes[SLOW], deployment.launchers[SLOW]
    # Faults 1 and 2: a hospital machine dies right after it pulled its round-1 train message, another
    # hospital's launcher dies while running it; both come back.
    out.first_id = submit_run(link, overrides=[*OVERRIDES, f"output.run_name={RUN_NAME}"], app_dir=deployment.app_dir,
                              stream=False, echo=None)  # the session's snapshot: the approved hash
    out.mark("run 1 submitted", t0)
    first = out.first_id
    _kill_in_round_1(deployment, out, t0)
    deployment.restart_node(KILLED)  # waits until the SuperLink counts the dead session offline
    out.mark(f"{KILLED} offline for the SuperLink; restarted with its launcher", t0)

    # Fault 3: the ServerApp dies mid round 2, after round 1's checkpoint.
    # (Which hospitals round 2 samples is Flower's choice: see docs/reliability.md; any one pulling its
    # train message means round 2 is under way.)
    def round_2_sent() -> bool:
        return (_checkpoint_round(out.run_dir) == 1
                and any(_received(n, "train", first) >= 2 for n in nodes.values()))
    wait_until(round_2_sent, STEP_S, "round 1 checkpointed and a round-2 train message pulled")
    out.mark("round 1 checkpointed, round 2 train pulled", t0)
    serverapps = link.serverapp_pids()
    out.serverapps_at_kill = len(serverapps)
    for pid in serverapps:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: all(processes.gone(pid) for pid in serverapps), 30, "the ServerApp process ends")
    out.mark("ServerApp SIGKILLed (round 2 train)", t0)
    out.rounds_at_kill, out.checkpoint_at_kill = _rounds(out.run_dir), _checkpoint_round(out.run_dir)
    # Resume once the SuperLink has marked the dead run finished (its missed heartbeats): until then a
    # SuperNode may still be retrying the pull of a round-2 message whose arrays the ServerApp died
    # before uploading, and would not serve the resumed run's statistics within round_timeout.
    out.first = wait_for_run(link, out.first_id, timeout=STEP_S)
    out.mark("run 1 marked finished", t0)
    # The dead run's round-2 ClientApps have normally ended by now. One that has not (Flower's ClientApp
    # retries some calls to its SuperNode without a deadline) is recorded, not waited for: the slow
    # node's step below tells the resumed run's ClientApps from older ones.
    leftover = {name: deployment.clientapp_pids(name) for name in nodes}
    out.leftover_clientapps = {name: [f"{pid} ({processes.status(pid)})" for pid in pids]
                               for name, pids in leftover.items() if pids}

    # Resume (round 2 again, then 3); fault 4: va's ClientApp stalls in round 3, longer than round_timeout.
    out.resumed_id = submit_run(link, overrides=[*OVERRIDES, f"resume={out.run_dir}"], app_dir=deployment.app_dir,
                                stream=False, echo=None)
    out.mark("run 2 (resume) submitted", t0)
    resumed = out.resumed_id
    wait_until(lambda: _received(slow, "train", resumed) >= 2, STEP_S, f"{SLOW} pulls its round-3 train message",
               max_delay=0.1)
    pulled, slow_sent = time.monotonic(), _sent(slow, "train", resumed)
    pids: list[int] = []

    # Stop it once it runs the task: a ClientApp stopped before it pulled its task is replaced by
    # Flower after 30 s (its claim expires), so wait until the launcher's child for the resumed run's
    # second train message (round 3) says it holds the message (its task is RUNNING), and is still the
    # launcher's child.
    def clientapp_running() -> bool:
        tasks = [t for t in slow_launcher.tasks() if t.run == resumed and t.message == "train"]
        pids[:] = [t.pid for t in tasks[1:] if t.pid in slow_launcher.clientapp_pids()]
        return bool(pids)
    wait_until(clientapp_running, 60, f"{SLOW}'s ClientApp runs its round-3 train message", max_delay=0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
    out.slow_stopped = list(stopped)
    out.mark(f"{SLOW}'s ClientApp SIGSTOPped (round 3 train)", t0)
    wait_until(lambda: any(_received(n, "evaluate", resumed) >= 2 for k, n in nodes.items() if k != SLOW),
               STEP_S, "the server moves on to round 3's evaluation")
    out.slow_wait_s = time.monotonic() - pulled
    out.slow_reply_sent = _sent(slow, "train", resumed) > slow_sent
    out.slow_status_at_release = next(str(n.get("status")) for n in list_supernodes(link)
                                      if str(n["node-id"]) == deployment.node_ids[SLOW])
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    stopped.clear()
    out.mark(f"round 3 evaluation sent; {SLOW} SIGCONTed", t0)

    wait_until(lambda: (out.run_dir / "summary.json").exists(), STEP_S, "the resumed run writes its summary")
    out.resumed = wait_for_run(link, out.resumed_id, timeout=STEP_S)
    out.slow_late_reply = _sent(slow, "train", resumed) > slow_sent
    out.mark("run 2 finished", t0)


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


def _final(run_dir: Path) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in torch.load(run_dir / "final_model.pt", weights_only=True).items()}


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
