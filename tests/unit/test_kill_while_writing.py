"""SIGKILL at every step of writing a checkpoint, a hospital's privacy ledger or an audit line leaves the
old file or the new one, never a torn one, and ``fedheart audit verify`` passes afterwards.

A fault hook, not timing, picks the moment: a forked child numbers the interpreter's call events while it
writes (``sys.setprofile``: every Python and C call and return, ``write``, ``fsync``, ``os.replace`` and
the temp file's creation included) and SIGKILLs itself at event N, which is what a SIGKILL from outside
landing between those two events does (no handler, no ``finally``, no flush runs). A first child counts
the write's events and names them; then one child per N, for N spread over the whole write and at each
event beside a write, flush, fsync, rename, temp-file creation or close. tests/unit/test_checkpoint_kill.py
kills a looping checkpoint writer at random moments instead.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
import torch

from fedheart.runs import CHECKPOINT, RunDir, load_checkpoint
from fedheart.safeguard import audit
from fedheart.safeguard.budget import BUDGET_DIR, BudgetBook
from fedheart.safeguard.files import locked
from fedheart_cli import main as cli

CTX = mp.get_context("fork")  # no re-import of torch per child
SPREAD = 24  # kill points spread evenly over a write, besides those next to its file operations
FILE_CALLS = {"write", "flush", "fsync", "replace", "mkstemp", "fdopen", "close", "open", "rename"}


def _child(write: Callable[[], None], kill_at: int | None, report: Connection | None) -> None:
    """Run ``write`` counting call events; SIGKILL this process at event ``kill_at``; else send the events."""
    gc.disable()  # a collection between two events would shift the numbering from one child to the next
    events: list[str] = []
    count = 0

    def hook(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        count += 1
        if count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if report is not None:
            events.append(getattr(arg, "__name__", "") if event.startswith("c_") else frame.f_code.co_name)

    sys.setprofile(hook)
    try:
        write()
    finally:
        sys.setprofile(None)
    if report is not None:
        report.send(events)


def _events(write: Callable[[], None]) -> list[str]:
    parent, child = CTX.Pipe(duplex=False)
    proc = CTX.Process(target=_child, args=(write, None, child))
    proc.start()
    assert parent.poll(60), "the counting child sent nothing"
    events = parent.recv()
    proc.join(30)
    assert proc.exitcode == 0
    return events


def kill_points(events: list[str]) -> list[int]:
    """1-based event numbers to kill at: beside every file operation, and spread over the whole write
    (short of its last two events, the returns into the child's own code)."""
    last = len(events) - 2
    near = {i + d for i, name in enumerate(events, start=1) if name in FILE_CALLS for d in (0, 1)}
    spread = {1 + k * (last - 1) // (SPREAD - 1) for k in range(SPREAD)}
    return sorted(p for p in near | spread if 1 <= p <= last)


def _kill_at(write: Callable[[], None], n: int) -> int:
    proc = CTX.Process(target=_child, args=(write, n, None))
    proc.start()
    proc.join(60)
    assert proc.exitcode is not None, "the writer hung"
    return proc.exitcode


def _restore(pristine: Path, folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(pristine, folder)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """A forked child must not inherit a busy OpenMP pool (it would hang in its first parallel op)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _checkpoint(server_round: int) -> dict[str, Any]:
    return {"round": server_round, "weights": {"w": torch.full((20_000,), float(server_round))},
            "federation": {str(r): {"mean-accuracy": r / 100} for r in range(1, server_round + 1)}}


def _round_of(folder: Path) -> int:
    state = load_checkpoint(folder)
    r = int(state["round"])
    assert bool(torch.all(state["weights"]["w"] == r)), "weights of another round"
    assert sorted(map(int, state["federation"])) == list(range(1, r + 1))
    return r


@pytest.mark.usefixtures("one_torch_thread")
def test_a_checkpoint_killed_at_every_step_is_the_old_or_the_new(tmp_path: Path) -> None:
    pristine, folder = tmp_path / "pristine", tmp_path / "run"
    RunDir(pristine).save_checkpoint(_checkpoint(1))
    _restore(pristine, folder)  # every child starts from the same files, so its events number alike
    points = kill_points(_events(lambda: RunDir(folder).save_checkpoint(_checkpoint(2))))
    seen = set()
    for n in points:
        _restore(pristine, folder)
        code = _kill_at(lambda: RunDir(folder).save_checkpoint(_checkpoint(2)), n)
        assert code == -signal.SIGKILL, f"event {n}: the writer was not killed (exit {code})"
        seen.add(_round_of(folder))
        assert (folder / CHECKPOINT).is_file()
    assert seen == {1, 2}, f"the kills never landed before or never after the rename: {seen}"


DATA_SHA = "ab" * 32


def _book(state: Path, runs: int) -> BudgetBook:
    """The ledger of ``state`` with runs run-0 ... run-<runs-1> (fixed values, so that a version's bytes
    are the same whoever writes it)."""
    book = BudgetBook.open(state, DATA_SHA, "cleveland")
    for i in range(runs):
        run = book.run(f"run-{i}")
        run.started, run.history = "2026-12-01T00:00:00+00:00", [(1.1, 0.05, 10 * (i + 1))]
        run.statistics, run.evaluations, run.epsilon = True, i, 0.5 * i
    return book


def test_a_ledger_killed_at_every_step_is_the_old_or_the_new(tmp_path: Path) -> None:
    pristine, state, newer = tmp_path / "pristine", tmp_path / "state", tmp_path / "newer"
    _book(pristine, 2).save()
    _book(newer, 3).save()  # the new version, written whole
    old, new = _book(pristine, 0).path.read_bytes(), _book(newer, 0).path.read_bytes()

    def write() -> None:  # one more run's releases, as the hospital's gate saves them
        with locked(state):
            _book(state, 3).save()

    _restore(pristine, state)
    points = kill_points(_events(write))
    seen = set()
    for n in points:
        _restore(pristine, state)
        assert _kill_at(write, n) == -signal.SIGKILL, f"event {n}: the writer was not killed"
        data = (state / BUDGET_DIR / f"{DATA_SHA}.json").read_bytes()  # before anything parses it
        assert data in (old, new), f"event {n}: the ledger is torn ({len(data)} bytes)"
        seen.add(data == new)
        assert set(BudgetBook.open(state, DATA_SHA).runs) in ({"run-0", "run-1"}, {"run-0", "run-1", "run-2"})
    assert seen == {False, True}, "the kills never landed before or never after the rename"


def _trail(state: Path, lines: int) -> None:
    for i in range(lines):
        audit.append(state, {"run": "7", "message": "train", "decision": "accepted", "n": i})


def test_an_audit_line_killed_at_every_step_leaves_a_trail_that_verifies(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pristine, state = tmp_path / "pristine", tmp_path / "state"
    _trail(pristine, 3)
    old = (pristine / audit.AUDIT_FILE).read_bytes()

    def write() -> None:
        with locked(state):  # as the hospital's gate appends
            audit.append(state, {"run": "8", "message": "evaluate", "decision": "accepted"})

    _restore(pristine, state)
    points = kill_points(_events(write))
    outcomes = set()
    for n in points:
        _restore(pristine, state)
        assert _kill_at(write, n) == -signal.SIGKILL, f"event {n}: the writer was not killed"
        data = (state / audit.AUDIT_FILE).read_bytes()
        if data != old:  # else the new trail: the old lines, unchanged, and one whole line more
            assert data.startswith(old) and data.count(b"\n") == old.count(b"\n") + 1, f"event {n}: torn"
        head = (state / audit.HEAD_FILE).read_text()
        outcomes.add((data != old, head == (pristine / audit.HEAD_FILE).read_text()))
        assert cli.main(["audit", "verify", str(state)]) == 0, f"event {n}: {capsys.readouterr().out}"
        # The next message's line goes on the chain whatever the kill left (a head one line behind too).
        with locked(state):
            audit.append(state, {"run": "8", "message": "evaluate", "decision": "accepted"})
        assert audit.verify(state)[0], f"event {n}: {audit.verify(state)[1]}"
    # Killed before the trail's rename, between the trail's and the head's, and after both.
    assert outcomes == {(False, True), (True, True), (True, False)}, outcomes
