"""What a local deployment does while a run goes through it, seen from outside (bench/perf_deploy.py).

:class:`Probe` samples every process under the benchmark (``launcher.deploy.Deployment`` starts the
SuperLink, SuperNodes and hospital launchers as its children; ``flwr run`` too) every ``interval``
seconds: each process group's CPU seconds so far and RSS (:func:`group_of`), and the new lines of
the deployment's log files, each stamped with the time it was first seen (read every
``tail_interval`` s, so up to that late; the hospital launcher's own lines carry their millisecond
``asctime``).

A process that ends between two samples would lose the CPU it used since the last one; its parent's
``children_user``/``children_system`` (what it reaped) gives that back, credited to the group of the
children that ended (:meth:`Probe.sample`). The clock is ``time.time()``, so that log times, audit
times and process start times (``create_time``, corrected by :meth:`Probe.calibrate`) line up.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


def group_of(cmdline: list[str], parent_cmdline: list[str], is_root: bool) -> str:
    """The process group of one process of a deployment, by its command line (and its parent's)."""
    if is_root:
        return "bench"
    line = " ".join(cmdline)
    if "launcher.hospital" in line:  # the warm parent, or a child it forked for one message
        return "clientapp" if "launcher.hospital" in " ".join(parent_cmdline) else "launcher"
    if "flower-superexec" in line:  # the SuperLink's (ServerApps) or a SuperNode's (ClientApps)
        return "superexec (link)" if "flower-superlink" in " ".join(parent_cmdline) else "superexec (node)"
    for key, group in (("flwr-clientapp", "clientapp"), ("flwr-serverapp", "serverapp"),
                       ("flower-supernode", "supernodes"), ("flower-superlink", "superlink")):
        if key in line:
            return group
    if len(cmdline) > 1 and Path(cmdline[1]).name == "flwr":
        return "flwr cli"
    return "other"


# The group that a process's children, ended before they were ever sampled, are charged to.
SPAWNS = {"launcher": "clientapp", "superexec (node)": "clientapp", "superexec (link)": "serverapp"}


@dataclass
class _Proc:
    group: str
    parent: int
    created: float
    own: float = 0.0  # user + system CPU seconds, last sample
    reaped: float = 0.0  # children_user + children_system, last sample
    rss: int = 0
    alive: bool = True
    credited: bool = False  # ended and reaped: its CPU is in its parent's children_* (see _credit_ended)


@dataclass
class Probe:
    """Samples the process tree of ``root`` and tails ``logs`` (paths) until stopped; see the module."""

    root: int
    logs: list[Path] = field(default_factory=list)
    interval: float = 0.25
    tail_interval: float = 0.05  # the logs are read more often than the processes (line times)
    procs: dict[tuple[int, float], _Proc] = field(default_factory=dict)  # (pid, start time)
    extra: Counter = field(default_factory=Counter)  # CPU of ended children, not seen in their last samples
    timeline: list[dict[str, Any]] = field(default_factory=list)  # {"t", "cpu": {group: s}, "rss": {group: B}}
    lines: list[tuple[float, str, str]] = field(default_factory=list)  # (time seen, file name, line)
    peak_rss: int = 0
    peak_processes: int = 0
    clock_offset: float = 0.0  # psutil create_time - time.time() (calibrate)
    others: list[str] = field(default_factory=list)  # command lines of the processes in group "other"

    def __post_init__(self) -> None:
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def tail(self, now: float) -> None:
        for path in self.logs:
            try:
                with path.open("rb") as f:
                    f.seek(self._offsets.get(path, 0))
                    data = f.read()
            except OSError:
                continue
            self._offsets[path] = self._offsets.get(path, 0) + len(data)
            *complete, rest = (self._partial.pop(path, b"") + data).split(b"\n")
            if rest:
                self._partial[path] = rest
            name = f"{path.parent.name}/{path.name}"
            self.lines += [(now, name, line.decode(errors="replace")) for line in complete]

    def skip_logs(self) -> None:
        """Start the tails at the logs' current ends (what the deployment's start wrote is not wanted)."""
        for path in self.logs:
            self._offsets[path] = path.stat().st_size if path.exists() else 0

    def sample(self) -> None:
        now = time.time()
        try:
            top = psutil.Process(self.root)
            tree = [top, *top.children(recursive=True)]
        except _GONE:
            tree = []
        seen: set[int] = set()
        for proc in tree:
            try:
                with proc.oneshot():
                    cpu = proc.cpu_times()
                    rss = proc.memory_info().rss
                    key = (proc.pid, round(proc.create_time(), 2))  # a reused pid is another process
                    entry = self.procs.get(key)
                    if entry is None:
                        parent = proc.ppid()
                        cmdline = proc.cmdline()
                        entry = _Proc(group_of(cmdline, self._cmdline(parent), proc.pid == self.root),
                                      parent, proc.create_time())
                        if entry.group == "other":
                            self.others.append(" ".join(cmdline)[:160])
                        self.procs[key] = entry
            except _GONE:
                continue
            seen.add(key)
            reaped = cpu.children_user + cpu.children_system
            if reaped > entry.reaped + 0.01 and len(self.timeline):
                self._credit_ended(proc.pid, key, reaped - entry.reaped, seen_now={p.pid for p in tree})
            entry.own, entry.reaped, entry.rss, entry.alive = cpu.user + cpu.system, reaped, rss, True
        for key, entry in self.procs.items():
            if key not in seen:
                entry.alive, entry.rss = False, 0
        cpu_by, rss_by = Counter(self.extra), Counter()
        for entry in self.procs.values():
            cpu_by[entry.group] += entry.own
            rss_by[entry.group] += entry.rss
        self.peak_rss = max(self.peak_rss, sum(rss_by.values()))
        self.peak_processes = max(self.peak_processes, len(seen))
        self.tail(now)
        self.timeline.append({"t": now, "cpu": {k: round(v, 3) for k, v in cpu_by.items()},
                              "rss": {k: v for k, v in rss_by.items() if v}})

    def _credit_ended(self, parent: int, parent_key: tuple[int, float], reaped: float, seen_now: set[int]) -> None:
        """``parent`` reaped ``reaped`` CPU seconds of children since the last sample: what its ended
        children used after their last sample goes to their group (most of them), else to "other"."""
        ended = [e for (pid, _), e in self.procs.items()
                 if e.parent == parent and not e.credited and pid not in seen_now]
        missed = reaped - sum(e.own + e.reaped for e in ended)
        if missed > 0.01:
            groups = Counter(e.group for e in ended)
            owner = self.procs.get(parent_key)
            fallback = SPAWNS.get(owner.group, "other") if owner else "other"  # children never sampled
            self.extra[groups.most_common(1)[0][0] if groups else fallback] += missed
        for e in ended:
            e.alive, e.credited = False, True

    def _cmdline(self, pid: int) -> list[str]:
        try:
            return psutil.Process(pid).cmdline()
        except _GONE:
            return []

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.tail_interval):
            if time.monotonic() - last >= self.interval:
                last = time.monotonic()
                self.sample()
            else:
                self.tail(time.time())

    def calibrate(self) -> float:
        """psutil's ``create_time`` counts from the boot time in whole seconds (``/proc/stat`` btime): its
        offset from ``time.time()``, from three short processes started here (median)."""
        offsets = []
        for _ in range(3):
            t0 = time.time()
            proc = subprocess.Popen(["sleep", "0.2"])
            offsets.append(psutil.Process(proc.pid).create_time() - t0)
            proc.wait()
        self.clock_offset = sorted(offsets)[1]
        return self.clock_offset

    def __enter__(self) -> Probe:
        self.calibrate()
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    # -- reading it back ----------------------------------------------------------------------
    def at(self, t: float) -> dict[str, Any]:
        """The last sample taken at or before ``t`` (the first one if none)."""
        before = [p for p in self.timeline if p["t"] <= t]
        return before[-1] if before else self.timeline[0]

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        """CPU seconds of each group between ``t0`` and ``t1`` and the peak RSS (MiB) in between."""
        a, b = self.at(t0), self.at(t1)
        cpu = {g: round(b["cpu"].get(g, 0.0) - a["cpu"].get(g, 0.0), 2) for g in b["cpu"]}
        inside = [p for p in self.timeline if t0 <= p["t"] <= t1] or [b]
        peak = max(sum(p["rss"].values()) for p in inside)
        return {"wall_s": round(t1 - t0, 3), "cpu_s": {g: v for g, v in cpu.items() if v >= 0.01},
                "cpu_total_s": round(sum(cpu.values()), 2), "peak_rss_mb": round(peak / 2**20, 1)}

    def started(self, entry: _Proc) -> float:
        """When a process started, on the ``time.time()`` clock (:meth:`calibrate`)."""
        return entry.created - self.clock_offset
