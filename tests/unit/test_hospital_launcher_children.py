"""launcher.hospital's warm parent and its forked children, each in a fresh interpreter (forking pytest is
not safe): the modules the parent holds, preloading, reseeding, the frozen heap, the image's stack, a
child killed with its launcher, and stopping. The rest of the launcher: test_hospital_launcher.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedheart.safeguard import audit
from launcher import hospital
from launcher.flower import REPO_ROOT, free_port

pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")

HASH_A = "a" * 64


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
