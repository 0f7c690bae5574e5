"""The simulation runs of ``bench/perf.py``: (a) fedheart, (b) Flower's floor app and (c) pooled training,
each measured over its whole process tree (wall, CPU, peak RSS, CPU by process group, log milestones)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python bench/perf.py` puts bench/ first, not the repository
    sys.path.insert(0, str(REPO_ROOT))

from launcher import processes  # noqa: E402
from launcher.flower import SuperLink, submit_run, wait_for_run  # noqa: E402

FLOOR_APP = REPO_ROOT / "bench" / "floor_app"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "uci-heart-disease"
PERF = Path(__file__).resolve().parent / "perf.py"  # the command line, whose --pooled-child runs (c)

# -- process-tree accounting (launcher.processes, psutil) -----------------------------------------
# Process groups of a simulation, by command line (first match): where the CPU goes in a run.
GROUPS = (("flwr-simulation", "simulation"),  # the ServerApp and the code that drives Ray, one process
          ("default_worker.py", "ray workers"), ("ray::", "ray workers"),  # the actors run the ClientApps
          ("/ray/", "ray services"), ("gcs_server", "ray services"), ("raylet", "ray services"),
          ("flower-superlink", "superlink"))


def _group(pid: int) -> str:
    cmdline = " ".join(processes.cmdline(pid))
    return next((group for key, group in GROUPS if key in cmdline), "other") if cmdline else "other"


class TreeSampler:
    """Samples a process tree every ``interval`` s: the last CPU time of every process seen, peak RSS
    sum, and a timeline of the CPU seconds used so far by each process group (:data:`GROUPS`).

    A process that lives less than one interval may be missed; the SuperLink, the simulation
    process and the Ray workers live for the whole run.
    """

    def __init__(self, root: int, interval: float = 0.25) -> None:
        self.root, self.interval = root, interval
        self.cpu: dict[int, float] = {}
        self.groups: dict[int, str] = {}
        self.timeline: list[dict[str, float]] = []  # {"t": seconds since start, group: CPU seconds so far}
        self.peak_rss = 0
        self.peak_processes = 0
        self.started = time.perf_counter()  # the timeline's origin (``time.perf_counter``)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        tree = processes.tree_usage(self.root)  # pid -> (CPU seconds, RSS bytes)
        for pid, (cpu, _rss) in tree.items():
            self.cpu[pid] = cpu
            if pid not in self.groups:
                self.groups[pid] = _group(pid)
        self.peak_rss = max(self.peak_rss, sum(rss for _cpu, rss in tree.values()))
        self.peak_processes = max(self.peak_processes, len(tree))
        point = {"t": round(time.perf_counter() - self.started, 2)}
        for pid, cpu in self.cpu.items():
            point[self.groups[pid]] = round(point.get(self.groups[pid], 0.0) + cpu, 2)
        self.timeline.append(point)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> TreeSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())


@contextmanager
def load_window(row: dict[str, Any]) -> Iterator[None]:
    """Record the 1/5/15-minute load averages before and after a measurement into ``row``."""
    row["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
    yield
    row["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]


def _epoch(timestamp: Any) -> float:
    """Seconds since the epoch of one of Flower's ISO run timestamps (``finished-at``); NaN if unknown."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(timestamp)).timestamp()
    except ValueError:
        return float("nan")


class StampedLog:
    """A log file whose every line starts with the seconds since ``t0`` (``time.perf_counter``) at which
    it arrived. Flower streams a run's log in batches, so a line's time is late by up to ~0.5 s."""

    def __init__(self, path: Path, t0: float) -> None:
        self.path, self.t0 = path, t0
        self._file = path.open("w")

    def write(self, text: str) -> None:
        now = time.perf_counter() - self.t0
        self._file.writelines(f"{now:8.2f} {line}\n" for line in text.splitlines())

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


# Log lines that mark where a run's time goes: (milestone, text in the line); the first such line,
# or the last one for "last round done". (a): fedheart's ServerApp log; (b): Flower's FedAvg log.
MILESTONES = {
    "a": [("simulation started", "Starting Flower Simulation"),
          ("first message sent", "Federated statistics: asking"),
          ("statistics done", "[fedheart] Hospitals:"),
          ("last round done", " done in "),  # "Round N/R done in ..."
          ("final table", "Final results after"),
          ("report written", "[fedheart] Report:")],
    "b": [("simulation started", "Starting Flower Simulation"),
          ("first message sent", "configure_train: Sampled"),
          ("first replies", "aggregate_train: Received"),
          ("last round done", "aggregate_evaluate: Received")],
}
LAST = {"last round done"}


def milestones(log: Path, marks: list[tuple[str, str]]) -> dict[str, float]:
    """Seconds since submission at which each milestone's line arrived (``StampedLog`` lines)."""
    found: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        stamp, _, text = line.strip().partition(" ")
        for name, pattern in marks:
            if pattern in text and (name in LAST or name not in found):
                found[name] = float(stamp)
    return found


def measure_flower(name: str, *, app_dir: Path, supernodes: int, run_config: dict[str, Any] | None = None,
                   overrides: list[str] | None = None, workdir: Path, env: dict[str, str],
                   timeout: float = 3600) -> dict[str, Any]:
    """One run on a fresh simulation SuperLink; wall, CPU and peak RSS of the SuperLink's process tree."""
    row: dict[str, Any] = {"name": name, "supernodes": supernodes}
    # Started in the app's folder: Ray's workers import from there first (else: this checkout's ClientApp).
    with load_window(row), SuperLink(workdir / name, extra_env=env, cwd=app_dir) as link:
        assert link.process is not None
        with TreeSampler(link.process.popen.pid) as tree:
            started, started_epoch = time.perf_counter(), time.time()
            tree_offset = started - tree.started  # the timeline's seconds since `flwr run` started
            log = StampedLog(workdir / f"{name}.log", started)
            # Wait on `flwr run --stream` (it ends when the run has finished), not by polling `flwr ls`:
            # every `flwr ls` is a Python process of ~2 CPU-s that would compete with the run measured.
            try:
                run_id = submit_run(link, overrides=overrides or [], run_config=run_config, app_dir=app_dir,
                                    stream=True, echo=log, timeout=timeout,  # type: ignore[arg-type]
                                    federation={"num-supernodes": supernodes, "client-resources-num-cpus": 1})
            finally:
                log.close()
            row["wall_s"] = time.perf_counter() - started
            row["started_epoch"] = started_epoch
        record = wait_for_run(link, run_id, timeout=60)  # the stream has ended: one `flwr ls`
        row["finished_s"] = _epoch(record.get("finished-at")) - started_epoch
        if record.get("status") != "finished:completed":
            raise RuntimeError(f"{name}: run {run_id} ended {record.get('status')}: {record.get('status-details')}"
                               f"\n{link.process.log_tail()}")
        row |= {"run_id": run_id, "elapsed_s": record.get("elapsed"), "cpu_s": tree.cpu_seconds,
                "peak_rss_mb": tree.peak_rss / 2**20, "peak_processes": tree.peak_processes,
                "cpu_timeline": [{**p, "t": round(p["t"] - tree_offset, 2)} for p in tree.timeline],
                "flwr_compute_s": (record.get("compute-time") or {}).get("total-seconds"),
                "traffic_bytes": (record.get("network-traffic") or {}).get("total-bytes")}
    return row


def fedheart_rounds(run_dir: Path) -> dict[str, Any]:
    """Per-round seconds and the run's total from fedheart's metrics.jsonl and summary.json."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rounds = [r["seconds"] for r in rows if r["phase"] == "federation"]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"round_s": rounds, "server_app_s": summary["seconds"], "phase_s": summary.get("phase_seconds", {})}


def run_fedheart(work: Path, rounds: int, hospitals: int, extra: list[str], name: str = "a-fedheart",
                 app_root: Path = REPO_ROOT) -> dict:
    """(a); ``app_root``: the app to submit (another copy of the code, e.g. before a change)."""
    outputs = work / "outputs"
    env = {"FEDHEART_DATA_DIR": str(DEFAULT_DATA), "FEDHEART_OUTPUT_DIR": str(outputs)}
    overrides = [f"rounds={rounds}", f"output.run_name={name}", *extra]
    row = measure_flower(name, app_dir=app_root, supernodes=hospitals, overrides=overrides, workdir=work, env=env)
    return row | fedheart_rounds(outputs / name) | {"overrides": overrides, "app_root": str(app_root),
                                                   "milestones_s": milestones(work / f"{name}.log", MILESTONES["a"])}


def run_floor(work: Path, rounds: int, hospitals: int, name: str = "b-flower-floor") -> dict:
    out = work / f"{name}.json"
    row = measure_flower(name, app_dir=FLOOR_APP, supernodes=hospitals, workdir=work, env={},
                         run_config={"rounds": rounds, "nodes": hospitals, "out": str(out)})
    floor = json.loads(out.read_text())
    return row | {"round_s": floor["round_s"], "server_app_s": floor["seconds"],
                  "milestones_s": milestones(work / f"{name}.log", MILESTONES["b"])}


def run_pooled(rounds: int, hospitals: int) -> dict:
    """(c) in a fresh process: pooled training, same gradient steps; its wall, CPU and peak RSS."""
    row: dict[str, Any] = {"name": "c-pooled"}
    env = {**os.environ, "FEDHEART_DATA_DIR": str(DEFAULT_DATA), "PYTHONPATH": str(REPO_ROOT)}
    with load_window(row):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, str(PERF), "--pooled-child", str(rounds), str(hospitals)],
                             env=env, capture_output=True, text=True, check=True)
        row["process_wall_s"] = time.perf_counter() - started
    return row | json.loads(out.stdout.strip().splitlines()[-1])


def pooled_child(rounds: int, hospitals: int) -> None:
    """Runs in the child process of :func:`run_pooled`; prints one JSON line."""
    import resource

    t0 = time.perf_counter()
    from bench.quality import pooled_run
    from fedheart.config import load_config
    from fedheart.schema import HOSPITALS

    keys = ",".join(h.key for h in HOSPITALS[:hospitals])
    cfg = load_config([f"rounds={rounds}", f"data.hospitals=[{keys}]"])
    imports = time.perf_counter() - t0
    import torch

    torch.set_num_threads(1)  # as each simulated client (Ray gives a 1-CPU actor OMP_NUM_THREADS=1)
    cpu0 = time.process_time()
    result = pooled_run(cfg, seed=cfg.seed)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall_s": result["seconds"], "cpu_s": time.process_time() - cpu0,
                      "process_cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
                      "import_s": imports, "steps": result["steps"], "torch_threads": _torch_threads(),
                      "round_s": [result["seconds"] / rounds] * rounds}))


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
