"""launcher.hospital beside real SuperNodes (``--isolation process``): an unapproved app is refused
before any of its code runs, the approved one completes on the same nodes (each message in a forked
process of its own), and a launcher ends once its SuperNode is gone.

Its own insecure loopback federation (shares nothing with the TLS ``deployment`` fixture): a SuperLink,
two UCI hospitals, one SuperNode and one launcher each; the policy approves only this repository's
app hash (``launcher.fab.app_hash``), taken from a snapshot of its app files so that an edit to the
checkout during the test cannot change the approved bundle.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fedheart.safeguard import audit
from launcher import processes
from launcher.fab import app_hash, snapshot_app
from launcher.flower import (
    REPO_ROOT,
    SuperLink,
    SuperNode,
    list_supernodes,
    submit_run,
    wait_for_run,
    wait_until,
)
from launcher.sidecar import LauncherProcess, superexec_secret

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")]

HOSPITALS = {"cleveland": "processed.cleveland.data", "hungarian": "processed.hungarian.data"}


@dataclass
class Federation:
    work: Path
    link: SuperLink
    app: Path  # the snapshot of this repository's app that the policy approves
    approved: str
    nodes: dict[str, SuperNode] = field(default_factory=dict)
    launchers: dict[str, LauncherProcess] = field(default_factory=dict)

    def state(self, name: str) -> Path:
        return self.work / "state" / name


def _ours(work: Path) -> list[str]:
    """Processes whose command line names the work folder (SuperLink, SuperNodes, launchers and their
    forked children all do)."""
    return processes.matching(str(work))


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Federation]:
    work = tmp_path_factory.mktemp("hospital-launcher")
    before = app_hash(REPO_ROOT)
    app = snapshot_app(REPO_ROOT, work / "approved-app")
    approved = app_hash(app)
    if app_hash(REPO_ROOT) == before:  # no edit to the checkout meanwhile: a snapshot hashes like the repository
        assert approved == before
    policy = work / "policy.yaml"
    policy.write_text("privacy: {require: none, max-epsilon-per-run: 10, lifetime-epsilon: 1000}\n"
                      "release: {baselines: true, tracking: true, evaluation: full, max-evaluations-per-run: 1000}\n"
                      f"approved-apps: [{approved}]\n")
    env = {"FEDHEART_OUTPUT_DIR": str(work / "outputs")}
    fed = Federation(work, SuperLink(work / "superlink", simulation=False, extra_env=env), app, approved)
    try:
        fed.link.start()
        for name, filename in HOSPITALS.items():
            # As launcher.deploy runs them: the SuperNode and its launcher share a SuperExec auth secret.
            secret = superexec_secret(work / name)
            node = SuperNode(work / name, fed.link.address, {
                "data-path": str(data_dir / filename), "hospital": name, "policy-path": str(policy),
                "state-dir": str(fed.state(name))}, isolation="process", name=name, extra_env=env,
                superexec_auth_secret=secret)
            fed.nodes[name] = node.start()
            fed.launchers[name] = LauncherProcess(node, policy, fed.state(name), secret, patience=5).start()
        wait_until(lambda: sum(n.get("status") == "online" for n in list_supernodes(fed.link)) == len(HOSPITALS),
                   180, "both SuperNodes online", max_delay=2.0)
        for launcher in fed.launchers.values():
            launcher.wait_ready()
        yield fed
    finally:
        for proc in [*fed.launchers.values(), *fed.nodes.values(), fed.link]:
            proc.stop()
        wait_until(lambda: not _ours(work), 30, "every process of the test ended")


def _unapproved_copy(fed: Federation, marker: Path) -> Path:
    """The approved app with one changed line: its ClientApp would write ``marker`` once imported."""
    copy = snapshot_app(fed.app, fed.work / "unapproved-app")
    app_py = copy / "client_app" / "app.py"
    text = app_py.read_text()
    assert "app = ClientApp()\n" in text
    write_marker = f"__import__('pathlib').Path({str(marker)!r}).write_text('ran')\n"
    app_py.write_text(text.replace("app = ClientApp()\n", "app = ClientApp()\n" + write_marker))
    return copy


def test_an_unapproved_app_is_refused_before_any_of_it_runs(federation: Federation) -> None:
    marker = federation.work / "unapproved-app-ran"
    copy = _unapproved_copy(federation, marker)
    refused_hash = app_hash(copy)
    assert refused_hash != federation.approved
    run_id = submit_run(federation.link, overrides=["rounds=1", "min_hospitals=2"], app_dir=copy, stream=False,
                        echo=None, timeout=300)
    record = wait_for_run(federation.link, run_id, timeout=300)
    assert record["status"] == "finished:failed", record
    assert refused_hash in str(record.get("status-details")), record
    assert not marker.exists(), "the unapproved ClientApp ran"
    for name in HOSPITALS:
        entries = list(audit.entries(federation.state(name), run=run_id))
        assert [(e["decision"], e["app"]["fab"], e["by"]) for e in entries] == [("refused", refused_hash, "launcher")]
        assert refused_hash in entries[0]["reason"] and audit.verify(federation.state(name))[0]


def test_the_approved_app_completes_on_the_same_supernodes(federation: Federation) -> None:
    run_id = submit_run(federation.link, overrides=["rounds=1", "min_hospitals=2", "min_replies=2"],
                        app_dir=federation.app, stream=False, echo=None, timeout=600)
    record = wait_for_run(federation.link, run_id, timeout=600)
    assert record["status"] == "finished:completed", record
    for name in HOSPITALS:
        entries = list(audit.entries(federation.state(name), run=run_id))
        assert entries and all(e["decision"] == "accepted" for e in entries), entries
        # The gate names the app by its install folder: the bundle's own code ran, not this checkout's.
        assert {e["app"]["fab"] for e in entries} == {federation.approved[:8]}
        launcher = federation.launchers[name]
        log = launcher.log_path.read_text()
        assert f"app {federation.approved} approved, forking" in log  # the SuperNode's task hash = app_hash
        assert "Traceback" not in log
        # Every message ran in a process of its own, forked for it (never the launcher itself), which ended.
        tasks = [t for t in launcher.tasks() if t.run == run_id]
        assert sorted(t.message for t in tasks) == sorted(e["message"] for e in entries), (tasks, entries)
        assert len(tasks) >= 4 and len({t.pid for t in tasks}) == len(tasks), tasks
        assert len({t.task for t in tasks}) == len(tasks) and len({t.node for t in tasks}) == 1, tasks
        assert launcher.process is not None and launcher.process.popen.pid not in {t.pid for t in tasks}
        for task in tasks:
            assert f"child {task.pid} ended (exit 0)" in log, task


def test_a_launcher_ends_when_its_supernode_is_gone(federation: Federation) -> None:
    federation.nodes["hungarian"].stop()
    launcher = federation.launchers["hungarian"]
    assert launcher.process is not None
    try:
        assert launcher.process.popen.wait(60) == 1
    finally:
        launcher.stop()
    assert "its SuperNode is gone" in launcher.process.log_tail()
    left = [p for p in _ours(federation.work) if str(federation.state("hungarian")) in p]
    assert not left, left
