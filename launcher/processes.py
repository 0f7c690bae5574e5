"""Process trees (psutil): what a Flower process or a hospital launcher spawned, what each runs, its state.

Every function takes and returns plain pids and treats a process that ends while it is looked at as
gone (no exception): the trees read here change all the time (one ClientApp process per message).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterable
from pathlib import Path

import psutil

_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


def children(pid: int, recursive: bool = False) -> list[int]:
    """The children of process ``pid`` (with ``recursive``: children, grandchildren, ...); [] once it is gone."""
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=recursive)]
    except _GONE:
        return []


def descendants(pid: int) -> list[int]:
    """Every descendant of process ``pid``."""
    return children(pid, recursive=True)


def cmdline(pid: int) -> list[str]:
    """The process's argv; [] once it has ended (or for a zombie)."""
    try:
        return psutil.Process(pid).cmdline()
    except _GONE:
        return []


def program_of(pid: int) -> str:
    """The program a process runs: the file name of its script for ``python SCRIPT ...``, else of argv[0];
    "" once it has ended."""
    argv = cmdline(pid)
    if len(argv) > 1 and Path(argv[0]).name.startswith("python") and not argv[1].startswith("-"):
        return Path(argv[1]).name
    return Path(argv[0]).name if argv else ""


def processes_named(root: int, program: str) -> list[int]:
    """Descendants of ``root`` running ``program`` (e.g. ``flwr-serverapp``, ``flwr-clientapp``)."""
    return [pid for pid in descendants(root) if program_of(pid) == program]


def status(pid: int) -> str:
    """psutil's state of a process (``running``, ``sleeping``, ``stopped``, ``zombie``, ...); "" once gone."""
    try:
        return str(psutil.Process(pid).status())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


def gone(pid: int) -> bool:
    """Whether the process has ended (a zombie, waiting for its parent to reap it, counts as ended)."""
    return status(pid) in ("", psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def stopped(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP)."""
    return status(pid) == psutil.STATUS_STOPPED


def signal_all(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to each of ``pids`` that still exists."""
    for pid in pids:
        with contextlib.suppress(*_GONE):
            psutil.Process(pid).send_signal(sig)


def matching(text: str) -> list[str]:
    """``"PID: COMMAND LINE"`` of every process whose command line contains ``text`` (e.g. a test's work
    folder, named by every process started for it)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if text in line:
            found.append(f"{proc.info['pid']}: {line[:150]}")
    return found


def tree_usage(root: int) -> dict[int, tuple[float, int]]:
    """pid -> (CPU seconds user+system, RSS bytes) of ``root`` and each of its descendants now."""
    try:
        tree = [psutil.Process(root)]
        tree += tree[0].children(recursive=True)
    except _GONE:
        return {}
    usage = {}
    for proc in tree:
        try:
            with proc.oneshot():
                cpu = proc.cpu_times()
                usage[proc.pid] = (cpu.user + cpu.system, proc.memory_info().rss)
        except _GONE:
            continue
    return usage
