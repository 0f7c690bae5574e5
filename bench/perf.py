"""Performance benchmark: what a fedheart round costs against Flower's floor and the compute floor.

    python bench/perf.py --out bench/results/perf [--rounds 15] [--hospitals 4] [--repeat 3] [--skip a,b,c]
                         [--before ../before] [--keep DIR]

Side by side, in one run:
  (a) fedheart's default simulation (4 hospitals, 15 rounds) through a real simulation SuperLink;
  (b) bench/floor_app: the same train + evaluate message rounds and nodes, clients that do no work
      (Flower's own floor);
  (c) pooled training in one process with the same number of gradient steps (the compute floor,
      ``bench/quality.py``'s ``pooled_run``).
For each: wall time (``flwr run`` started until its log stream ends with the run; the median of
``--repeat`` runs, (a) and (b) alternated), seconds per round, CPU seconds and peak RSS of the
whole process tree (the SuperLink and every descendant, sampled with psutil), and the ratios a/b
and a/c, and where the CPU went: each process group's CPU seconds (the simulation process with
the ServerApp, Ray's services, the Ray workers running the ClientApps, the SuperLink) between the
milestones of the run's log. ``--before DIR`` adds (a) from another copy of the code (e.g. a git
worktree of an older commit) to every repeat, for a before/after under the same machine load.
The run's end is taken from ``flwr run --stream``, not by polling ``flwr ls``: each
``flwr ls`` is a Python process of about 2 CPU-s that would compete with the run it measures.
The machine load (``os.getloadavg``) is recorded before and after each measurement: run it under
the e2e lock on a shared machine (``flock /tmp/fedheart-e2e.lock ...``).
Writes ``perf.json`` and ``perf.md`` under --out. Scale, start-up and privacy costs: bench/scale.py.
``--deploy R``: instead, fedheart on the local TLS deployment with the hospital launcher (a), on
Flower's stock SuperExec (a0), and the floor app (b), R rounds, ``--repeat`` times alternated
(bench/perf_deploy.py; ``deploy-<date>.json`` / ``.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
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
TARGET_A_OVER_B = 1.25


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
    with load_window(row), SuperLink(workdir / name, extra_env=env) as link:
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
        out = subprocess.run([sys.executable, __file__, "--pooled-child", str(rounds), str(hospitals)],
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


HEAVY = ("torch", "pandas", "sklearn", "scipy", "opacus", "hydra", "omegaconf", "matplotlib", "boto3", "ray",
         "torch._dynamo")
# What a train message's fresh ClientApp process runs before its own work: the app module, the
# handlers (a module of their own since the app module was made light; before that the app module
# held them), then one training step through the code's default optimiser (torch.optim's classes
# import torch._dynamo on first use). Works on both layouts, so --app-root can point at old code.
STARTUP_PROBE = f"""
import json, sys, time
t = time.perf_counter()
import client_app.app
try:
    import client_app.handlers
except ImportError:
    pass
imported = time.perf_counter() - t
import numpy as np
from fedheart.model import build_model
from fedheart import training
if hasattr(training, "TensorBatches"):
    from fedheart.specs import TrainConfig
    batches = training.TensorBatches
else:  # the layout before fedheart.specs
    TrainConfig, batches = training.TrainConfig, training.make_loader
x = np.zeros((16, 4), dtype=np.float32)
training.train(build_model("logreg", 4), batches(x, np.zeros(16, dtype=np.float32), 16, seed=0), TrainConfig(), 1)
print(json.dumps({{"import_s": imported, "first_step_s": time.perf_counter() - t - imported,
                  "heavy": sorted(m for m in sys.modules if m in {HEAVY!r})}}))
"""


# Packages whose import cost --startup reports (cumulative, so sklearn includes the scipy.stats it imports).
IMPORT_BREAKDOWN = ("flwr", "torch", "sklearn", "scipy.stats", "pandas", "client_app.handlers")


def import_breakdown(importtime: str) -> dict[str, float]:
    """Cumulative seconds of each :data:`IMPORT_BREAKDOWN` package from ``python -X importtime``'s
    stderr (``import time: self [us] | cumulative | name``; a module is listed once, at its first import)."""
    out: dict[str, float] = {}
    for line in importtime.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[2].strip() in IMPORT_BREAKDOWN and parts[1].strip().isdigit():
            out.setdefault(parts[2].strip(), int(parts[1]) / 1e6)
    return out


def startup(repeats: int = 3, app_root: Path = REPO_ROOT) -> dict[str, Any]:
    """What a fresh ClientApp process pays before a train message's own work (:data:`STARTUP_PROBE`),
    with the import time of the heavy packages (``-X importtime``, which adds a little overhead).

    A SuperNode (deployment, ``--isolation subprocess``) starts one such process per message; a
    simulation's Ray actor pays the same imports once, on its first message.
    ``app_root``: another copy of the code (e.g. the state before a change) to compare.
    """
    row: dict[str, Any] = {"name": "clientapp-import", "app_root": str(app_root), "runs": []}
    with load_window(row):
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            out = subprocess.run([sys.executable, "-X", "importtime", "-c", STARTUP_PROBE], cwd=app_root,
                                 capture_output=True, text=True, check=True,
                                 env={**os.environ, "PYTHONPATH": str(app_root)})
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            probe = json.loads(out.stdout.strip().splitlines()[-1])
            row["runs"].append({"process_wall_s": time.perf_counter() - started, "import_s": probe["import_s"],
                                "first_step_s": probe["first_step_s"],
                                "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
                                "max_rss_mb": after.ru_maxrss / 1024,
                                "import_breakdown_s": import_breakdown(out.stderr)})
            row["heavy_modules"] = probe["heavy"]
    for key in ("process_wall_s", "import_s", "first_step_s", "cpu_s"):
        row[f"{key}_median"] = sorted(r[key] for r in row["runs"])[len(row["runs"]) // 2]
    row["import_breakdown_s_median"] = {
        name: sorted(r["import_breakdown_s"].get(name, 0.0) for r in row["runs"])[len(row["runs"]) // 2]
        for name in IMPORT_BREAKDOWN}
    return row


def message_bytes(overrides: list[str]) -> dict[str, int]:
    """Serialized size (Flower's protobuf) of one client's four messages in a round, built with the
    ServerApp's and ClientApp's own functions on the real Cleveland data (simulation counts no traffic)."""
    from flwr.app import MetricRecord, RecordDict
    from flwr.common.serde import recorddict_to_proto

    from fedheart import stats as fstats
    from fedheart.config import load_config
    from fedheart.hospital import configured_hospitals, evaluate_round, train_round
    from fedheart.model import build_model, get_weights
    from fedheart.protocol import parse_train, task_settings, train_settings
    from server_app.records import config_record, to_arrays

    cfg = load_config(overrides)
    data = list(configured_hospitals(cfg, root=DEFAULT_DATA).values())
    stats = fstats.GlobalStats.from_totals(fstats.combine([d.statistics() for d in data]))
    pre = data[0].preprocessor(stats)
    spec = cfg.model
    weights = get_weights(build_model(spec, pre.num_features, seed=cfg.seed))
    task = task_settings(cfg, stats.to_json())
    train_cfg = {**task, **train_settings(cfg)}
    new, train_metrics = train_round(data[0], pre, weights, spec, parse_train(train_cfg), seed=0, server_round=1)
    eval_metrics = evaluate_round(data[0], pre, new, spec)

    def size(content: dict) -> int:
        return recorddict_to_proto(RecordDict(content)).ByteSize()

    out = {"train-instruction": size({"arrays": to_arrays(weights), "config": config_record(train_cfg)}),
           "train-reply": size({"arrays": to_arrays(new), "metrics": MetricRecord(train_metrics)}),
           "evaluate-instruction": size({"arrays": to_arrays(new), "config": config_record(task)}),
           "evaluate-reply": size({"metrics": MetricRecord(eval_metrics)})}
    out["per-round"] = sum(out.values())
    out["weights"] = int(sum(w.nbytes for w in weights.values()))
    return out


def privacy_costs(rounds: int) -> dict[str, Any]:
    """DP-SGD and SecAgg+ against plain FedAvg for 4 and 16 clients, with the other engineers' benchmarks
    (bench/privacy.py ``cost``: in-process federation; bench/secagg_cost.py ``measure``: real simulations),
    and bytes per client per round."""
    from bench.privacy import cost, load_hospitals
    from fedheart.config import load_config

    report: dict[str, Any] = {"rounds": rounds}
    with load_window(report):
        report["bytes"] = {"fedavg": message_bytes([]), "dp-sgd": message_bytes(
            ["privacy=dp-sgd", "privacy.epsilon=1.0"]), "fedavg, model=mlp": message_bytes(["model=mlp"])}
        cfg = load_config([f"rounds={rounds}"])
        report["dp_sgd"] = cost(cfg, load_hospitals(cfg), [4, 16], seed=0)
    secagg = REPO_ROOT / "bench" / "results" / "secagg" / "secagg_cost.json"
    if secagg.is_file():  # bench/secagg_cost.py's own run (real simulations, under the e2e lock)
        report["secagg"] = json.loads(secagg.read_text())
    else:
        from bench.secagg_cost import measure

        report["secagg"] = measure(clients=(4, 16), rounds=rounds, data_dir=DEFAULT_DATA)
    return report


def machine() -> dict[str, Any]:
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gib": round(int(mem) / 2**20, 1),
            "python": platform.python_version(), "platform": platform.platform(), "flwr": _version("flwr"),
            "torch": _version("torch")}


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time, with every run's wall time under ``wall_s_all``."""
    ordered = sorted(rows, key=lambda r: r["wall_s"])
    return ordered[(len(ordered) - 1) // 2] | {"wall_s_all": [round(r["wall_s"], 2) for r in rows]}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def summarize(rows: dict[str, dict]) -> dict[str, Any]:
    for row in rows.values():
        row["round_s_mean"] = _mean(row.get("round_s", []))
        # Round 1 of the floor app carries the Ray actors' start-up (fedheart's statistics phase does):
        # compare steady rounds.
        row["steady_round_s"] = sorted(row["round_s"][1:])[len(row["round_s"][1:]) // 2] if len(
            row.get("round_s", [])) > 1 else row["round_s_mean"]
    a, b, c, before = rows.get("a"), rows.get("b"), rows.get("c"), rows.get("before")
    ratios: dict[str, float] = {}
    for key in ("wall_s", "steady_round_s", "cpu_s", "peak_rss_mb"):
        if a and b:
            ratios[f"a/b {key}"] = a[key] / b[key]
        if before and b:
            ratios[f"before/b {key}"] = before[key] / b[key]
        if a and before:
            ratios[f"a/before {key}"] = a[key] / before[key]
        if a and c:
            ratios[f"a/c {key}"] = a[key] / c[key]
    return ratios


def timeline_marks(row: dict[str, Any]) -> list[tuple[str, float]]:
    """A run's milestones in time order, ending with the end of its log stream."""
    return sorted([*row["milestones_s"].items(), ("stream ended", row["wall_s"])], key=lambda kv: kv[1])


def cpu_by_phase(row: dict[str, Any]) -> list[tuple[str, float, dict[str, float]]]:
    """CPU seconds each process group used between consecutive milestones: (until, seconds, by group)."""
    timeline = row["cpu_timeline"]
    marks = timeline_marks(row)

    def at(t: float) -> dict[str, float]:
        before = [p for p in timeline if p["t"] <= t]
        return before[-1] if before else {}

    phases, last_t, last = [], 0.0, at(0.0)
    for name, t in marks:
        now = at(t)
        groups = {k: now.get(k, 0.0) - last.get(k, 0.0) for k in now if k != "t"}
        phases.append((name, t - last_t, {k: v for k, v in groups.items() if v >= 0.05}))
        last_t, last = t, now
    return phases


def cpu_by_phase_table(key: str, row: dict[str, Any]) -> list[str]:
    phases = cpu_by_phase(row)
    groups = sorted({g for _, _, by in phases for g in by})
    lines = [f"({key}) CPU seconds by process group, from the previous milestone to each (all cores together; "
             "`cpu_timeline` in the JSON):", "",
             "| until | wall s | " + " | ".join(groups) + " | all |", "|---|---:|" + "---:|" * (len(groups) + 1)]
    for name, seconds, by in phases:
        lines.append(f"| {name} | {seconds:.1f} | " + " | ".join(f"{by.get(g, 0.0):.1f}" for g in groups)
                     + f" | {sum(by.values()):.1f} |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = ["# Performance: fedheart against Flower's floor and the compute floor\n",
             f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}, "
             f"flwr {m['flwr']}, torch {m['torch']}; {report['date']}. Simulation: 1 CPU per client, "
             f"{report['hospitals']} hospitals, {report['rounds']} rounds.\n",
             "| run | wall s (median) | every run's wall s | round 1 s | s / round (median of 2..) | CPU s (tree) | "
             "peak RSS MiB (tree) | load before → after |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    for key, row in report["runs"].items():
        load = f"{row['loadavg_before'][0]:.1f} → {row['loadavg_after'][0]:.1f}"
        every = " / ".join(f"{w:.1f}" for w in row.get("wall_s_all", [row["wall_s"]]))
        lines.append(f"| {key}: {row['name']} | {row['wall_s']:.1f} | {every} | {row['round_s'][0]:.2f} | "
                     f"{row['steady_round_s']:.2f} | {row['cpu_s']:.1f} | {row['peak_rss_mb']:.0f} | {load} |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in report["ratios"].items()]
    a_b = report["ratios"].get("a/b wall_s")
    if a_b is not None:
        verdict = "meets" if a_b <= TARGET_A_OVER_B else "misses"
        lines.append(f"\nTarget a/b (whole run, wall) <= {TARGET_A_OVER_B}: {a_b:.2f}, {verdict} it.")
    a = report["runs"].get("a")
    if a and a.get("phase_s"):
        lines.append(f"\n(a) phases: statistics {a['phase_s'].get('statistics', 0):.1f} s (includes the Ray actors' "
                     f"ClientApp imports), rounds {sum(a['round_s']):.1f} s, baselines "
                     f"{a['phase_s'].get('baselines', 0):.1f} s; run submission (`flwr run`, FAB build) "
                     f"{a['wall_s'] - a['elapsed_s']:.1f} s of the wall time.")
    timelines = [(key, row) for key, row in report["runs"].items() if row.get("milestones_s")]
    if timelines:
        lines.append("\nTimelines of the median runs, seconds since `flwr run` was started (when each line of the "
                     "run's log arrived; Flower streams the log in batches, so up to ~0.5 s late):\n")
        for key, row in timelines:
            lines.append(f"- ({key}) " + " · ".join(f"{name} {t:.1f}" for name, t in timeline_marks(row)))
    for key, row in timelines:
        if row.get("cpu_timeline"):
            lines += ["", *cpu_by_phase_table(key, row)]
    lines.append("\n(c) wall is the training process's own time (load + train + evaluate), without "
                 "Python start-up and imports (`import_s` in perf.json). RSS sums double-count shared pages.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "perf")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--hospitals", type=int, default=4)
    parser.add_argument("--skip", default="", help="comma-separated: a, b and/or c")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of (b) and (a), alternated; each is reported by its median-wall run")
    parser.add_argument("--tag", default="", help="suffix of the output files (e.g. 'before')")
    parser.add_argument("--overrides", default="", help="extra Hydra overrides for (a)")
    parser.add_argument("--startup", type=int, default=0, metavar="N",
                        help="only measure a fresh ClientApp process's imports, N times")
    parser.add_argument("--app-root", type=Path, default=REPO_ROOT,
                        help="the code copy that (a) and --startup run (e.g. a git worktree of an older commit)")
    parser.add_argument("--before", type=Path, metavar="APP_ROOT",
                        help="also run (a) from this code copy in every repeat, alternated with the others "
                             "(row 'before', ratio a/before): a before/after under the same machine load")
    parser.add_argument("--deploy", type=int, default=0, metavar="ROUNDS",
                        help="only measure the local TLS deployment for ROUNDS rounds (bench/perf_deploy.py): "
                             "(a) fedheart with the hospital launcher, (a0) on Flower's stock SuperExec, (b) the "
                             "floor app on the stock SuperExec; --repeat, --skip (a, a0, b), --keep, --tag apply")
    parser.add_argument("--privacy", type=int, default=0, metavar="ROUNDS",
                        help="only measure DP-SGD / SecAgg+ costs against FedAvg (4, 16 clients) and message bytes")
    parser.add_argument("--render", action="store_true", help="only rewrite the markdown from --out's JSON")
    parser.add_argument("--keep", type=Path, help="keep each repeat's logs and run folders under this folder")
    parser.add_argument("--pooled-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for option, root in (("--app-root", args.app_root), ("--before", args.before)):
        if root is not None and not (root / "pyproject.toml").is_file():
            parser.error(f"{option} {root}: no pyproject.toml there; give a copy of the app "
                         "(e.g. `git worktree add ../before <commit>`)")
    if args.pooled_child:
        pooled_child(*args.pooled_child)
        return 0
    if args.privacy:
        row = privacy_costs(args.privacy)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "privacy_comm.json").write_text(json.dumps(row, indent=2, default=str) + "\n")
        print(json.dumps(row, indent=2, default=str))
        return 0
    if args.deploy:  # bench/perf_deploy.py: (a), (a0) and (b) on the local TLS deployment
        from bench.perf_deploy import run as run_deploy

        run_deploy(args.deploy, args.repeat, args.overrides.split(), args.out, keep=args.keep,
                   skip={k for k in args.skip.split(",") if k}, tag=args.tag)
        return 0
    if args.startup:
        row = startup(args.startup, args.app_root)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"startup{'-' + args.tag if args.tag else ''}.json").write_text(json.dumps(row, indent=2) + "\n")
        print(json.dumps(row, indent=2))
        return 0
    if args.render:
        stem = "perf" + (f"-{args.tag}" if args.tag else "")
        report = json.loads((args.out / f"{stem}.json").read_text())
        report["ratios"] = summarize(report["runs"])
        (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / f"{stem}.md").write_text(markdown(report))
        print(markdown(report))
        return 0
    skip = set(filter(None, args.skip.split(",")))
    samples: dict[str, list[dict]] = {"a": [], "before": [], "b": [], "c": []}
    for i in range(args.repeat):  # alternated, so that a change in the machine's load hits both
        keep = args.keep / f"repeat-{i + 1}" if args.keep else None
        with contextlib.nullcontext(str(keep)) if keep else tempfile.TemporaryDirectory(prefix="fedheart-perf-") as tmp:
            work = Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            if "b" not in skip:
                samples["b"].append(run_floor(work, args.rounds, args.hospitals))
            if "a" not in skip:
                samples["a"].append(run_fedheart(work, args.rounds, args.hospitals, args.overrides.split(),
                                                 app_root=args.app_root))
            if args.before:
                samples["before"].append(run_fedheart(work, args.rounds, args.hospitals, args.overrides.split(),
                                                      name="a-before", app_root=args.before))
            if "c" not in skip and i == 0:
                samples["c"].append(run_pooled(args.rounds, args.hospitals))
        for key, rows_ in samples.items():
            if rows_ and len(rows_) == i + 1:
                print(f"repeat {i + 1}/{args.repeat} {key}: wall {rows_[-1]['wall_s']:.1f} s", flush=True)
    rows = {key: median_row(rows_) for key, rows_ in samples.items() if rows_}
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "rounds": args.rounds,
              "hospitals": args.hospitals, "runs": rows}
    report["ratios"] = summarize(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "perf" + (f"-{args.tag}" if args.tag else "")
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
