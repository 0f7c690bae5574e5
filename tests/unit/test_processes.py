"""launcher.flower.Process: stopping a Flower process also stops what it spawned and left behind."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.flower import Process, process_state, start_process, wait_until

# A parent that starts a long-lived child in its own process group, writes the child's pid, and waits.
PARENT = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(child.pid))\n"
    "import os; os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "time.sleep(600)\n"
)


def _gone(pid: int) -> bool:
    return process_state(pid) in ("", "Z")  # ended (a zombie waits for its new parent to reap it)


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
    assert not _gone(child)
    proc.stop()
    assert proc.popen.returncode is not None
    # SIGTERM ended the parent only; the child outlived it in the group until stop() swept the group.
    wait_until(lambda: _gone(child), 10, "the orphaned child ends")


def test_stop_sweeps_the_group_even_when_the_process_had_already_exited(parent: tuple[Process, int]) -> None:
    proc, child = parent
    proc.popen.terminate()
    proc.popen.wait(15)
    assert not _gone(child), "the child outlives its parent"
    proc.stop()
    wait_until(lambda: _gone(child), 10, "the orphaned child ends")
