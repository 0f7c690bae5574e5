"""The fault scenario of test_faults.py on the session's real local deployment: one seeded 3-round run
carries the faults (a SuperNode and a launcher killed in round 1, the ServerApp killed mid round 2), a
resumed run finishes it (a ClientApp stalled past ``round_timeout`` in round 3). What happened, and when,
is recorded in a :class:`FaultRun` for the tests to check."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher import processes
from launcher.deploy import Deployment
from launcher.flower import FlowerError, list_supernodes, submit_run, wait_for_run, wait_until
from tests.e2e.runs import STEP_S, _checkpoint_round, _metrics, _received, _rounds, _sent

KILLED = "switzerland"  # SuperNode SIGKILLed in round 1, restarted
LAUNCHER_KILLED = "hungarian"  # launcher SIGKILLed in round 1 (its SuperNode stays), restarted
SLOW = "va"  # ClientApp SIGSTOPped in the resumed run's round 3
ROUND_TIMEOUT = 45  # s; a normal phase takes 10-30 s on the shared 2-core machine
OVERRIDES = ["rounds=3", "seed=0", "train.local_steps=5", "baselines=false", "min_replies=2",
             f"round_timeout={ROUND_TIMEOUT}"]
RUN_NAME = "e2e-faults"


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
