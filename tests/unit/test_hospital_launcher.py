"""launcher.hospital and launcher.fab without a SuperNode: the Flower symbols they rely on, the
approval decision, the refusal (error reply, task output, audit line), the warm parent's modules,
reseeding in forked children, the exit once the Runtime API is gone, and the app hash."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
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


# -- the warm parent and its children (in a fresh interpreter: forking pytest is not safe) --------------
def _python(code: str, timeout: float = 180) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_the_warm_parent_keeps_the_hospitals_safeguards_but_no_app_module(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(f"approved-apps: [{HASH_A}]\n")
    out = _python(f"""
import sys
from pathlib import Path
from launcher import hospital
s = hospital.hospital_safeguards()
assert not hospital.app_modules(), hospital.app_modules()
hospital.preload(["yaml", "numpy"])
assert s.load_policy(Path({str(tmp_path / 'policy.yaml')!r})).approved_apps == ({HASH_A!r},)
with s.locked(Path({str(tmp_path)!r})):
    s.append(Path({str(tmp_path)!r}), {{"decision": "refused"}})
assert not hospital.app_modules(), hospital.app_modules()
try:
    hospital.preload(["fedheart.config"])
except hospital.LauncherError as exc:
    print("refused:", exc)
assert not hospital.app_modules()
""")
    assert "refused: --preload fedheart.config" in out
    assert [e["decision"] for e in audit.entries(tmp_path)] == ["refused"]


def test_preloading_puts_the_root_logger_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """opacus calls logging.basicConfig on import: every child would print Flower's DEBUG lines."""
    import logging

    (tmp_path / "noisy_on_import.py").write_text("import logging\nlogging.basicConfig(level=logging.DEBUG)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    assert hospital.preload(["noisy_on_import", "no_such_module_here"]) == ["noisy_on_import"]
    assert (list(root.handlers), root.level) == before


def test_forked_children_draw_different_random_streams_after_reseed() -> None:
    code = """
import json, os, random, sys
import numpy as np, torch
from launcher.hospital import reseed
np.random.seed(0); random.seed(0); torch.manual_seed(0)

def child(do_reseed):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        if do_reseed:
            reseed()
        os.write(w, json.dumps([np.random.random(), random.random(), torch.rand(1).item()]).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.waitpid(pid, 0)
    return json.loads(data)

print(json.dumps({"plain": [child(False), child(False)], "reseeded": [child(True), child(True)]}))
"""
    draws = json.loads(_python(code).strip().splitlines()[-1])
    (np1, _, t1), (np2, _, t2) = draws["plain"]
    assert (np1, t1) == (np2, t2), "without a reseed forked children share numpy's and torch's stream (control)"
    a, b = draws["reseeded"]
    assert a[0] != b[0] and a[1] != b[1] and a[2] != b[2], f"reseeded children drew the same numbers: {a} {b}"


def test_a_forked_child_does_not_collect_the_warm_parents_objects() -> None:
    """gc.freeze in the warm parent: a child's collections skip what the parent held at start-up (a full
    collection over them would write to, and so copy, the parent's pages in every child)."""
    code = """
import gc, json, os
from launcher import hospital
hospital.preload(["numpy", "yaml"])
held = [[i] for i in range(100_000)]  # stands for the preloaded stack's objects

def tracked_in_child():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, str(len(gc.get_objects())).encode())
        os._exit(0)
    os.close(w)
    n = int(os.read(r, 64))
    os.waitpid(pid, 0)
    return n

before = tracked_in_child()
frozen = hospital.freeze_heap()
print(json.dumps([before, frozen, tracked_in_child()]))
"""
    before, frozen, after = json.loads(_python(code).strip().splitlines()[-1])
    assert before > 100_000, "control: without the freeze a child's collector tracks the parent's objects"
    assert frozen > 100_000 and after < before // 10, (before, frozen, after)


def test_the_launcher_freezes_its_heap_once_preloaded(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(f"approved-apps: [{HASH_A}]\n")
    address = f"127.0.0.1:{free_port()}"
    out = subprocess.run([sys.executable, "-m", "launcher.hospital", "--runtime-api-address", address,
                          "--policy", str(tmp_path / "policy.yaml"), "--state-dir", str(tmp_path / "state"),
                          "--insecure", "--preload", "yaml", "--patience", "0.3"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == hospital.EXIT_API_GONE, out.stderr[-2000:]
    frozen = int(out.stderr.split("warm parent ready: ")[1].split("(")[1].split(" objects frozen")[0])
    assert frozen > 1000, out.stderr[-2000:]


def test_the_launcher_needs_nothing_beyond_the_app_images_stack() -> None:
    """The supernode image runs ``python -m launcher.hospital`` (docker/): it must not need what only the
    local deployment's tooling uses (psutil, launcher.flower)."""
    out = _python("import sys, launcher.hospital\n"
                  "print(sorted(m for m in ('psutil', 'launcher.flower', 'launcher.processes') if m in sys.modules))")
    assert out.strip() == "[]", out


def test_a_child_is_killed_with_its_launcher() -> None:
    """PR_SET_PDEATHSIG: the kernel SIGKILLs a forked child once its parent dies (no Flower exit handler
    runs, so its SuperNode answers the task itself once the token expires, see launcher.hospital.warm)."""
    code = """
import os, time
from launcher import processes
from launcher.hospital import die_with_parent
r, w = os.pipe()
middle = os.fork()
if middle == 0:
    parent = os.getpid()
    if os.fork() == 0:
        os.write(w, f"{int(die_with_parent(parent))} {os.getpid()}".encode())
        time.sleep(60)
        os._exit(0)
    time.sleep(1)
    os._exit(0)  # the launcher dies; its child must not outlive it
os.close(w)
watched, child = os.read(r, 100).decode().split()
os.waitpid(middle, 0)
deadline = time.monotonic() + 10
while not processes.gone(int(child)) and time.monotonic() < deadline:
    time.sleep(0.05)
print(watched, processes.gone(int(child)))
"""
    assert _python(code).split()[-2:] == ["1", "True"], "the child outlived its launcher"


def test_stopping_lets_running_tasks_finish_then_kills_the_rest() -> None:
    code = """
import logging, os, signal, sys, time
from pathlib import Path
from launcher.hospital import Child, HospitalLauncher
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
launcher = HospitalLauncher("127.0.0.1:1", Path("policy.yaml"), Path("state"), insecure=True, grace=2)
quick, stuck = os.fork(), None
if quick == 0:
    time.sleep(0.3); os._exit(0)
stuck = os.fork()
if stuck == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60); os._exit(0)
launcher.children = {quick: Child(1, 7, "h"), stuck: Child(2, 7, "h")}
started = time.monotonic()
launcher.stop_children()
print(f"took {time.monotonic() - started:.1f}s, left {launcher.children}")
"""
    out = _python(code)
    assert "task 1 of run 7: child " in out and "ended (exit 0)" in out, out
    assert "killing 1 task(s) still running after 2s: task 2 of run 7" in out, out
    took = float(out.split("took ")[1].split("s,")[0])
    assert 1.5 <= took < 10 and "left {}" in out, out


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
