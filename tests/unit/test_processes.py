"""launcher.flower.Process: stopping a Flower process also stops what it spawned and left behind; and
launcher.processes, the process-tree helpers (psutil) the launchers, tests and benchmarks use."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher import processes
from launcher.flower import Process, start_process, wait_until

# A parent that starts a long-lived child in its own process group, writes the child's pid, and waits.
PARENT = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(child.pid))\n"
    "import os; os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def parent(tmp_path: Path) -> Iterator[tuple[Process, int]]:
    """A started parent process and the pid of the child it left running."""
    pid_file = tmp_path / "child.pid"
    proc = start_process("parent", [sys.executable, "-c", PARENT, str(pid_file)], dict(os.environ),
                         tmp_path / "parent.log", cwd=tmp_path)
    try:
        wait_until(pid_file.exists, 60, "the parent starts its child", proc=proc.popen, log_path=proc.log_path)
        yield proc, int(pid_file.read_text())
    finally:
        proc.kill_group()


def test_stop_kills_what_the_process_left_in_its_group(parent: tuple[Process, int]) -> None:
    proc, child = parent
    assert not processes.gone(child)
    proc.stop()
    assert proc.popen.returncode is not None
    # SIGTERM ended the parent only; the child outlived it in the group until stop() swept the group.
    wait_until(lambda: processes.gone(child), 10, "the orphaned child ends")


def test_stop_sweeps_the_group_even_when_the_process_had_already_exited(parent: tuple[Process, int]) -> None:
    proc, child = parent
    proc.popen.terminate()
    proc.popen.wait(15)
    assert not processes.gone(child), "the child outlives its parent"
    proc.stop()
    wait_until(lambda: processes.gone(child), 10, "the orphaned child ends")


def test_the_tree_names_states_and_usage_of_what_a_process_spawned(parent: tuple[Process, int]) -> None:
    proc, child = parent
    root = proc.popen.pid
    assert processes.children(root) == [child] and processes.descendants(root) == [child]
    assert processes.program_of(child).startswith("python")
    assert processes.cmdline(child)[1:] == ["-c", "import time; time.sleep(600)"]
    assert processes.processes_named(root, processes.program_of(child)) == [child]
    usage = processes.tree_usage(root)
    assert set(usage) == {root, child} and all(cpu >= 0 and rss > 0 for cpu, rss in usage.values())
    os.kill(child, signal.SIGSTOP)
    wait_until(lambda: processes.stopped(child), 10, "the child is stopped")
    os.kill(child, signal.SIGCONT)
    wait_until(lambda: not processes.stopped(child), 10, "the child runs again")
    assert any(line.startswith(f"{child}: ") for line in processes.matching("import time; time.sleep(600)"))
    processes.signal_all([child, child])  # SIGKILL; a pid signalled twice or gone is no error
    wait_until(lambda: processes.gone(child), 10, "the killed child ends")
    processes.signal_all([child])
    assert processes.children(child) == [] and processes.cmdline(child) == []
    assert processes.status(child) in ("", "zombie")
