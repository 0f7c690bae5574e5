"""launcher.hospital and launcher.fab without a SuperNode: the Flower symbols they rely on, the
approval decision, the refusal (error reply, task output, audit line), the exit once the Runtime API
is gone or on a bad policy, and the app hash. The warm parent and its forked children:
test_hospital_launcher_children.py."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fedheart.safeguard import audit, files, policy
from launcher import hospital
from launcher.fab import AppHashError, app_hash
from launcher.flower import REPO_ROOT, free_port

pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")

HASH_A = "a" * 64
HASH_B = "b" * 64
SYMBOLS = [(module, name) for module, names in hospital.FLOWER_SYMBOLS.items() for name in names]


@pytest.mark.parametrize(("module", "name"), SYMBOLS, ids=[f"{m}:{n}" for m, n in SYMBOLS])
def test_every_flower_symbol_the_launcher_needs_is_where_it_expects(module: str, name: str) -> None:
    try:
        found = importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"Flower moved or removed the module {module} (launcher.hospital needs {name} from it): {exc}")
    assert hasattr(found, name), f"Flower moved or removed {module}.{name}, which launcher.hospital needs"


def test_the_flower_calls_keep_the_shapes_the_launcher_uses() -> None:
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.proto.runtime_pb2 import AcquireTaskRequest, AcquireTaskResponse
    from flwr.proto.task_pb2 import Task
    from flwr.supercore.constant import TaskType
    from flwr.supernode.runtime import run_clientapp as rc

    wanted = {"runtime_api_address", "token", "insecure", "certificates", "parent_pid"}
    missing = wanted - set(inspect.signature(rc.run_clientapp).parameters)
    assert not missing, f"flwr run_clientapp lost the parameters {sorted(missing)}"
    assert list(inspect.signature(rc.pull_task_input).parameters) == ["client"], "flwr pull_task_input(client) changed"
    assert list(inspect.signature(rc.push_message).parameters) == ["client", "message", "context"], \
        "flwr push_message(client, message, context) changed"
    assert list(inspect.signature(rc.push_task_output).parameters) == ["client", "context", "sub_status", "details"], \
        "flwr push_task_output(client, context, sub_status, details) changed"
    assert "supported_task_types" in AcquireTaskRequest.DESCRIPTOR.fields_by_name, "AcquireTaskRequest changed"
    assert {"task", "token"} <= set(AcquireTaskResponse.DESCRIPTOR.fields_by_name), "AcquireTaskResponse changed"
    assert {"task_id", "run_id", "type", "fab_hash"} <= set(Task.DESCRIPTOR.fields_by_name), "flwr Task changed"
    # A child logs its pid once it holds its message by wrapping pull_task_input, which run_clientapp
    # looks up in its module at call time.
    assert "pull_task_input" in rc.run_clientapp.__code__.co_names, "run_clientapp no longer calls pull_task_input"
    # launcher.hospital.bundles replaces the installer and the message-part pull the same way.
    assert "install_from_fab" in rc.run_clientapp.__code__.co_names, "run_clientapp no longer calls install_from_fab"
    assert "pull_and_inflate_object_from_tree" in rc.pull_task_input.__code__.co_names, \
        "pull_task_input no longer calls pull_and_inflate_object_from_tree"
    assert {"install_dir", "skip_prompt"} <= set(inspect.signature(rc.install_from_fab).parameters), \
        "flwr install_from_fab(fab_file, install_dir, skip_prompt) changed"
    assert {"initial_backoff", "backoff_cap"} <= set(
        inspect.signature(rc.pull_and_inflate_object_from_tree).parameters), \
        "flwr pull_and_inflate_object_from_tree lost initial_backoff/backoff_cap"
    assert TaskType.CLIENT_APP == "flwr-clientapp"
    assert (ErrorCode.INVALID_FAB, SubStatus.FAILED) == (7, "failed")


# -- the decision ---------------------------------------------------------------------------------
def test_only_a_listed_hash_is_approved() -> None:
    assert hospital.decide(HASH_A, [HASH_A, HASH_B]) == hospital.Approval(True, HASH_A)
    assert hospital.decide(HASH_A.upper(), [HASH_A]).approved
    refused = hospital.decide(HASH_B, [HASH_A])
    assert not refused.approved and HASH_B in refused.reason and "approved-apps" in refused.reason
    assert not hospital.decide(HASH_A, []).approved
    assert not hospital.decide("", [HASH_A]).approved


def _safeguards() -> hospital.Safeguards:
    # Not hospital_safeguards(): it drops fedheart from this test process's sys.modules.
    return hospital.Safeguards(policy.load_policy, policy.PolicyError, audit.append, files.locked)


def _launcher(tmp_path: Path, approved: list[str], address: str = "127.0.0.1:1",
              **kw: Any) -> hospital.HospitalLauncher:
    path = tmp_path / "policy.yaml"
    path.write_text(f"approved-apps: [{', '.join(approved)}]\n")
    return hospital.HospitalLauncher(address, path, tmp_path / "state", insecure=True, safeguards=_safeguards(), **kw)


def test_the_policy_is_read_for_every_task_and_an_unreadable_one_refuses(tmp_path: Path) -> None:
    launcher = _launcher(tmp_path, [HASH_A])
    assert launcher.approval(HASH_A).approved and not launcher.approval(HASH_B).approved
    launcher.policy_path.write_text(f"approved-apps: [{HASH_B}]\n")
    assert launcher.approval(HASH_B).approved and not launcher.approval(HASH_A).approved
    launcher.policy_path.write_text("approved-apps: [not-a-hash]\n")
    broken = launcher.approval(HASH_B)
    assert not broken.approved and "policy file cannot be read" in broken.reason
    assert "not-a-hash" not in broken.reason  # the server learns nothing of the file


# -- refusing -------------------------------------------------------------------------------------
class _Task:
    task_id, run_id, fab_hash = 11, 22, HASH_B


def test_a_refusal_replies_an_error_naming_the_hash_finishes_the_task_and_is_audited(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.app import Context, Message, Metadata, RecordDict
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supernode.runtime import run_clientapp as rc

    incoming = Message(RecordDict(), metadata=Metadata(
        run_id=22, message_id="m1", src_node_id=1, dst_node_id=5, reply_to_message_id="", group_id="",
        created_at=time.time(), ttl=600, message_type="query.stats"))
    context = Context(run_id=22, node_id=5, node_config={}, state=RecordDict(), run_config={})
    calls: list[tuple[str, Any]] = []

    class FakeClient:
        def close(self) -> None:
            calls.append(("close", None))

    monkeypatch.setattr(rc, "pull_task_input", lambda client: (incoming, context, None, object()))
    monkeypatch.setattr(rc, "push_message", lambda client, message, ctx: calls.append(("reply", message)))
    monkeypatch.setattr(rc, "push_task_output",
                        lambda client, ctx, sub, details: calls.append(("output", (sub, details))))
    monkeypatch.setattr("flwr.cli.install.install_from_fab",
                        lambda *a, **k: pytest.fail("a refused bundle was installed"))
    launcher = _launcher(tmp_path, [HASH_A])
    monkeypatch.setattr(launcher, "_client", lambda component, token=None: FakeClient())

    launcher.dispatch(_Task(), "token")

    kinds = [kind for kind, _ in calls]
    assert kinds == ["reply", "output", "close"]
    reply = calls[0][1]
    assert reply.has_error() and reply.error.code == ErrorCode.INVALID_FAB and HASH_B in reply.error.reason
    assert reply.metadata.reply_to_message_id == "m1"
    assert calls[1][1] == (SubStatus.FAILED, reply.error.reason)
    assert launcher.children == {}  # nothing forked
    (entry,) = list(audit.entries(launcher.state_dir))
    assert entry["decision"] == "refused" and entry["app"] == {"fab": HASH_B} and entry["run"] == "22"
    assert entry["message"] == "query.stats" and entry["node"] == 5 and HASH_B in entry["reason"]
    assert entry["reply_sha256"] == hashlib.sha256(reply.error.reason.encode()).hexdigest()
    assert audit.verify(launcher.state_dir)[0]


def test_the_launcher_exits_once_the_runtime_api_is_gone(tmp_path: Path) -> None:
    launcher = _launcher(tmp_path, [HASH_A], address=f"127.0.0.1:{free_port()}", patience=0.5)
    started = time.monotonic()
    assert launcher.run() == hospital.EXIT_API_GONE
    assert time.monotonic() - started < 10


def test_a_bad_policy_stops_the_launcher_before_it_polls(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("approved-apps: [nope]\n")
    out = subprocess.run([sys.executable, "-m", "launcher.hospital", "--runtime-api-address", "127.0.0.1:1",
                          "--policy", str(bad), "--state-dir", str(tmp_path / "state"), "--insecure",
                          "--preload", "none"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == hospital.EXIT_CONFIG
    assert "approved-apps" in out.stderr and str(bad) in out.stderr


# -- the app hash ---------------------------------------------------------------------------------
def test_the_app_hash_is_the_sha256_of_the_bundle_flwr_run_sends(tmp_path: Path) -> None:
    from flwr.cli.build import build_fab_from_disk

    digest = app_hash(REPO_ROOT)
    assert digest == hashlib.sha256(build_fab_from_disk(REPO_ROOT)).hexdigest()
    fab = tmp_path / "app.fab"
    fab.write_bytes(build_fab_from_disk(REPO_ROOT))
    assert app_hash(fab) == digest == hashlib.sha256(fab.read_bytes()).hexdigest()
    for wrong in (tmp_path / "missing", tmp_path / "README.md", tmp_path):
        if wrong.name == "README.md":
            wrong.write_text("x")
        with pytest.raises(AppHashError):
            app_hash(wrong)
