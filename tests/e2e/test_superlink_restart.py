"""The SuperLink killed mid-run and restarted, on the session's real deployment (tests/e2e/conftest.py:
a TLS SuperLink with SuperNode authentication, one ``flower-supernode`` and hospital launcher per hospital).

One seeded 2-round run (the kill falls in its last round); once round 1 is checkpointed and a
hospital has pulled its round-2 train message, the SuperLink is SIGKILLed with every process it
started (its SuperExec and the run's ServerApp: the aggregator's machine failing, ``SuperLink.kill``).
It stays down until every SuperNode has logged a failed Fleet call, then starts again on the same
port, state database and certificates
(``Deployment.restart_superlink``). No SuperNode or launcher is restarted: each reconnects by Flower's
own retries (``--max-retries``/``--max-wait-time``, launcher.flower). The operator's one command,
``python -m launcher.resume RUN_DIR --stop``, stops the dead run and continues the folder from its
checkpoint. The final model is compared with the same seeded run done uninterrupted in process
(LoopbackGrid), and every hospital's audit trail and privacy ledger with what its SuperNode received.

No sleeps: each step waits for a condition with a deadline (SuperNode logs, the run folder's
checkpoint, ``flwr ls``/``flwr supernode list``). The timeline is printed (``-s``; docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedheart.safeguard import audit
from fedheart.safeguard.budget import books
from fedheart.schema import HOSPITALS
from launcher.deploy import COMPLETED, Deployment
from launcher.flower import (
    REPO_ROOT,
    FlowerError,
    flower_env,
    list_supernodes,
    run_status,
    stop_run,
    submit_run,
    wait_until,
)
from tests.e2e.runs import STEP_S, TOLERANCE, _checkpoint_round, _final, _rounds

pytestmark = pytest.mark.e2e

ROUNDS = 2  # the kill falls in the last round: the resumed run redoes it and finishes
OVERRIDES = [f"rounds={ROUNDS}", "seed=0", "train.local_steps=5", "baselines=false", "min_replies=2",
             "round_timeout=45"]
RUN_NAME = "e2e-superlink-restart"
RUN = re.compile(r"\[RUN (\d+)")  # Flower's "[RUN <id>]" (or "[RUN <id>, ROUND <n>]") before each message
RECEIVING = re.compile(r"Receiving: (\S+) message")
FAILED_CALL = "Connection attempt failed"  # flwr.supercore.retry: each backoff of a Fleet call
RECONNECTED = re.compile(r"Connection successful after ([\d.]+) seconds and (\d+) tries")


def _log(deployment: Deployment, name: str, offset: int = 0) -> str:
    node = deployment.nodes[name]
    assert node.process is not None
    with node.process.log_path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def received(text: str) -> Counter[tuple[str, str]]:
    """(run id, message type) -> messages the SuperNode received in full ("Received successfully")."""
    counts: Counter[tuple[str, str]] = Counter()
    run, pending = None, None
    for line in text.splitlines():
        if m := RUN.search(line):
            run = m.group(1)
        elif m := RECEIVING.search(line):
            pending = (str(run), m.group(1))
        elif "Received successfully" in line and pending:
            counts[pending] += 1
            pending = None
    return counts


@dataclass
class Restart:
    run_dir: Path
    first_id: str = ""
    resumed_id: str = ""
    resumed: dict[str, Any] = field(default_factory=dict)
    first: dict[str, Any] = field(default_factory=dict)
    processes_before: dict[str, tuple[int, int]] = field(default_factory=dict)  # SuperNode, launcher pid
    processes_after: dict[str, tuple[int, int]] = field(default_factory=dict)
    serverapps_at_kill: int = 0
    rounds_at_kill: list[int] = field(default_factory=list)
    checkpoint_at_kill: int | None = None
    status_at_resume: str = ""
    reconnected: dict[str, tuple[float, int]] = field(default_factory=dict)  # seconds, tries (Flower's log)
    log_offsets: dict[str, int] = field(default_factory=dict)
    trails_at_kill: dict[str, bytes] = field(default_factory=dict)
    ledgers_at_kill: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    resume_output: str = ""
    round_seconds: list[float] = field(default_factory=list)  # metrics.jsonl: round 1 (first run), then 2 (resumed)
    timeline: dict[str, float] = field(default_factory=dict)

    def mark(self, what: str, t0: float) -> None:
        self.timeline[what] = round(time.monotonic() - t0, 1)


def _federation(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return [r for r in rows if r["phase"] == "federation"]


def _pids(deployment: Deployment) -> dict[str, tuple[int, int]]:
    return {name: (node.process.popen.pid if node.process else 0,
                   deployment.launchers[name].process.popen.pid if deployment.launchers[name].process else 0)
            for name, node in deployment.nodes.items()}


def _ledgers(state: Path) -> dict[str, dict[str, Any]]:
    """run id -> that run's entry in the hospital's (one) privacy ledger."""
    return {rid: {"statistics": run.statistics, "evaluations": run.evaluations}
            for book in books(state) for rid, run in book.runs.items()}


def _inject(deployment: Deployment, out: Restart, app: Path) -> None:
    assert deployment.link is not None
    link, names, t0 = deployment.link, list(deployment.nodes), time.monotonic()
    out.processes_before = _pids(deployment)
    out.first_id = submit_run(link, overrides=[*OVERRIDES, f"output.run_name={RUN_NAME}"], app_dir=app,
                              stream=False, echo=None)
    out.mark("run submitted", t0)

    def round_2_pulled() -> bool:
        return _checkpoint_round(out.run_dir) == 1 and any(
            received(_log(deployment, n))[(out.first_id, "train")] >= 2 for n in names)
    wait_until(round_2_pulled, STEP_S, "round 1 checkpointed and a round-2 train message received", max_delay=0.1)
    out.serverapps_at_kill = len(link.serverapp_pids())
    out.log_offsets = {n: deployment.nodes[n].process.log_path.stat().st_size for n in names}  # type: ignore[union-attr]
    link.kill()
    killed = time.monotonic()
    out.mark("SuperLink SIGKILLed with its SuperExec and ServerApp (round 2 train)", t0)
    out.rounds_at_kill, out.checkpoint_at_kill = _rounds(out.run_dir), _checkpoint_round(out.run_dir)
    for name, state in deployment.state_dirs.items():
        out.trails_at_kill[name] = (state / audit.AUDIT_FILE).read_bytes()
        out.ledgers_at_kill[name] = _ledgers(state)

    # Down until every SuperNode has noticed (a pod restart takes longer than one 3 s pull interval).
    wait_until(lambda: all(FAILED_CALL in _log(deployment, n, out.log_offsets[n]) for n in names), 60,
               "every SuperNode logs a failed Fleet call", max_delay=0.1)
    out.mark("every SuperNode retrying", t0)
    online_s = deployment.restart_superlink()
    out.mark(f"SuperLink restarted, every SuperNode online ({online_s:.1f}s)", t0)

    def reconnected() -> bool:
        for n in names:
            if m := RECONNECTED.search(_log(deployment, n, out.log_offsets[n])):
                out.reconnected[n] = (float(m.group(1)), int(m.group(2)))
        return len(out.reconnected) == len(names)
    wait_until(reconnected, 60, "every SuperNode logs its reconnection", max_delay=0.2)
    out.mark(f"every SuperNode reconnected (last {time.monotonic() - killed:.1f}s after the kill)", t0)

    # The operator's one command: stop what is left of the dead run, continue the folder from its checkpoint.
    out.status_at_resume = str(run_status(link, out.first_id)["status"])
    command = [sys.executable, "-m", "launcher.resume", str(out.run_dir), "--stop", "--flwr-home",
               str(link.flwr_home), "--connection", link.connection, "--app", str(app), "--timeout", str(STEP_S)]
    resuming = time.monotonic()
    proc = subprocess.Popen(command, env=flower_env(link.flwr_home), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # ends when the command does (it follows the new run to its end)
            out.resume_output += line
            if m := re.search(r"run (\d+) continues", line):
                out.resumed_id = m.group(1)
                out.mark(f"resumed run submitted ({time.monotonic() - resuming:.1f}s after launcher.resume began)", t0)
        code = proc.wait(60)  # its output has ended: it is exiting
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, out.resume_output
    out.mark("resumed run completed (launcher.resume exit 0)", t0)
    out.round_seconds = [round(float(r["seconds"]), 1) for r in _federation(out.run_dir)]
    out.resumed = run_status(link, out.resumed_id)
    out.first = run_status(link, out.first_id)
    out.processes_after = _pids(deployment)


@pytest.fixture(scope="module")
def restart(deployment: Deployment, app_snapshot: Path) -> Iterator[Restart]:
    assert deployment.link is not None
    deployment.wait_online()
    out = Restart(run_dir=deployment.output_dir / RUN_NAME)
    try:
        _inject(deployment, out, app_snapshot)
    finally:  # leave the deployment as found: SuperLink up, every node and launcher running and online
        link = deployment.link
        if link.process is None or link.process.popen.poll() is not None:
            deployment.restart_superlink()
        for run_id in (out.first_id, out.resumed_id):
            if run_id:
                with contextlib.suppress(FlowerError):
                    stop_run(link, run_id)
        deployment.ensure_running()
        print(f"\nSuperLink restart timeline (s): {out.timeline}; each SuperNode's reconnection (s, tries): "
              f"{out.reconnected}; rounds took {out.round_seconds} s; the dead run: {out.status_at_resume} when "
              f"launcher.resume began, then {out.first.get('status')} ({out.first.get('status-details')})")
    yield out


def test_the_superlink_is_killed_mid_round_2_after_round_1s_checkpoint(restart: Restart) -> None:
    assert restart.serverapps_at_kill == 1
    assert restart.rounds_at_kill == [1] and restart.checkpoint_at_kill == 1


def test_every_supernode_and_launcher_reconnects_without_a_restart(restart: Restart, deployment: Deployment) -> None:
    assert restart.processes_after == restart.processes_before, "a SuperNode or launcher was restarted"
    assert set(restart.reconnected) == set(deployment.nodes)  # each retried (backoff) and got through
    assert all(tries >= 2 for _, tries in restart.reconnected.values()), restart.reconnected


def test_the_resumed_run_completes_redoing_one_round_at_most(restart: Restart, deployment: Deployment) -> None:
    # Stopped by launcher.resume --stop, unless the SuperLink had failed it already (its ServerApp's
    # heartbeats stopped): either way it is over before the resumed run starts.
    assert restart.first["status"] in ("finished:stopped", "finished:failed"), restart.first
    assert restart.resumed["status"] == COMPLETED, restart.resume_output
    assert _rounds(restart.run_dir) == list(range(1, ROUNDS + 1))  # federation rows: each round once
    assert json.loads((restart.run_dir / "summary.json").read_text())["rounds"] == ROUNDS
    for name in deployment.nodes:
        got = received(_log(deployment, name))
        trained = got[(restart.first_id, "train")] + got[(restart.resumed_id, "train")]
        assert trained - ROUNDS <= 1, f"{name} trained {trained} times for {ROUNDS} rounds"
        assert got[(restart.resumed_id, "train")] >= ROUNDS - 1, f"{name} missed a round of the resumed run: {got}"


def _reference() -> dict[str, np.ndarray]:
    """The uninterrupted run in process: the same seeded configuration over LoopbackGrid."""
    import client_app.app as client
    from fedheart.config import load_config
    from launcher.loopback import LoopbackGrid
    from server_app.federation import Federation
    from server_app.strategies import build_strategy

    cfg = load_config([*OVERRIDES, "output.run_name=reference"])
    count = len(cfg.data.hospitals)
    grid = LoopbackGrid(client.app, [{"partition-id": i, "num-partitions": count} for i in range(count)])
    federation = Federation(cfg, grid, build_strategy(cfg), run_id=1)
    federation.run()
    return _final(federation.run_dir.path)


def test_the_final_model_equals_an_uninterrupted_runs(restart: Restart, data_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDHEART_DATA_DIR", str(data_dir))
    monkeypatch.setenv("FEDHEART_OUTPUT_DIR", str(tmp_path))
    a, b = _reference(), _final(restart.run_dir)
    assert a.keys() == b.keys()
    worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    print(f"\nmax |restarted deployment - in-process reference| = {worst:.3g}")
    assert worst <= TOLERANCE, f"the resumed model differs from the uninterrupted one by {worst}"


def test_no_audit_or_ledger_entry_is_lost_or_duplicated(restart: Restart, deployment: Deployment) -> None:
    runs = (restart.first_id, restart.resumed_id)
    for name, state in deployment.state_dirs.items():
        ok, message = audit.verify(state)
        assert ok, message
        trail = (state / audit.AUDIT_FILE).read_bytes()
        assert trail.startswith(restart.trails_at_kill[name]), f"{name}: an audit line of before the kill changed"
        entries = [e for e in audit.entries(state) if e.get("run") in runs]
        # One line per message the SuperNode received, for each run and message type: none lost, none twice.
        audited = Counter((e["run"], e["message"]) for e in entries)
        got = received(_log(deployment, name))
        assert audited == Counter({k: v for k, v in got.items() if k[0] in runs}), name
        replies = [(e["run"], e["message"], e["reply_sha256"]) for e in entries]
        assert len(set(replies)) == len(replies), f"{name}: a reply audited twice"
        ledger = _ledgers(state)
        for rid, before in restart.ledgers_at_kill[name].items():  # nothing of before the kill lost
            assert ledger[rid]["evaluations"] >= before["evaluations"] and ledger[rid]["statistics"] >= \
                before["statistics"], (name, rid)
        for rid in runs:  # the ledger counts each run's releases as the trail does
            accepted = Counter(e["message"] for e in entries if e["run"] == rid and e["decision"] == "accepted")
            assert ledger[rid] == {"statistics": accepted["query.stats"] == 1,
                                   "evaluations": accepted["evaluate"]}, (name, rid, accepted)


def test_the_deployment_is_left_healthy(deployment: Deployment, restart: Restart) -> None:
    assert deployment.link is not None and deployment.link.process is not None
    assert deployment.link.process.popen.poll() is None
    assert all(n.process and n.process.popen.poll() is None for n in deployment.nodes.values())
    assert all(launcher.running for launcher in deployment.launchers.values())
    online = {str(n["node-id"]) for n in list_supernodes(deployment.link) if n.get("status") == "online"}
    assert online == set(deployment.node_ids.values())
    assert {h.key for h in HOSPITALS} == set(deployment.nodes)
