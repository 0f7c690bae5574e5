"""Deployment benchmark (``bench/perf.py --deploy R [--repeat N]``): fedheart against Flower's floor
on the local TLS deployment, with the hospital launcher and with Flower's stock SuperExec.

In one benchmark run, ``--repeat`` times, alternated (the order rotates from one repeat to the next):
  (a)  fedheart, ``Deployment(launcher="hospital")``: each SuperNode in ``--isolation process`` beside
       launcher.hospital, which forks a warm child per message;
  (a0) fedheart, ``Deployment(launcher="flower")``: Flower's stock SuperExec, a fresh
       ``flwr-clientapp`` process per message;
  (b)  bench/floor_app (clients import only Flower and reply at once) on Flower's stock SuperExec,
       with fedheart's reply polling (``prompt-grid = true``, a copy of server_app.polling).
Every run uses the same layout: the 4 UCI hospitals, one set of certificates (launcher.certs), one
policy file per hospital (tests/e2e/conftest.py's permissive policy, approving both apps' bundle
hashes, launcher.fab.app_hash) and one state folder per hospital; both apps are copied once at the
start (:func:`snapshot`) and every run submits the copy; a fresh deployment is started for every run
(its start is timed, outside the run). Measured from ``flwr run`` to the end of its log
stream, with bench/deploy_probe.py: per round and per phase the wall time, CPU seconds of every
process group and peak RSS; per message, from its arrival at the SuperNode to the ClientApp's process
(forked child or ``flwr-clientapp``), to the message in the child's hands (launcher log), to the
gate's audit line (the handler done) and to the reply sent. Writes ``deploy-<date>.json`` / ``.md``.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.deploy_probe import Probe
from bench.deploy_report import analyse, markdown
from launcher.certs import write_bundle
from launcher.deploy import Deployment
from launcher.deploy_cli import hospital_files
from launcher.fab import app_hash, fab_bytes
from launcher.flower import REPO_ROOT, submit_run, wait_for_run

FLOOR_APP = REPO_ROOT / "bench" / "floor_app"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "uci-heart-disease"
VARIANTS = {"a": ("fedheart, hospital launcher", "hospital", "fedheart"),  # (name, launcher, app)
            "a0": ("fedheart, Flower's stock SuperExec", "flower", "fedheart"),
            "b": ("Flower's floor app, stock SuperExec", "flower", "floor")}
APPS = {"fedheart": REPO_ROOT, "floor": FLOOR_APP}
TARGETS = {"a/b round_s": ("<=", 1.0), "a0/a round_s": (">=", 2.5)}
# tests/e2e/conftest.py's PERMISSIVE_POLICY: every message passes the gate, ledger and audit trail.
PERMISSIVE_POLICY = """\
privacy: {require: none, max-epsilon-per-run: 10, lifetime-epsilon: 1000, seeded-noise: false}
release: {baselines: true, tracking: true, evaluation: full, max-evaluations-per-run: 1000}
"""


@dataclass
class Layout:
    """What every run shares: hospital files, certificates, policies, state and output folders."""

    root: Path
    files: dict[str, Path]
    certs: Path
    policies: dict[str, Path]
    state_root: Path
    outputs: Path
    apps: dict[str, Path]
    hashes: dict[str, str]

    @classmethod
    def create(cls, root: Path, data_dir: Path = DEFAULT_DATA) -> Layout:
        files, _cfg = hospital_files([], data_dir)
        write_bundle(root / "certs", [], list(files))
        apps = {name: snapshot(path, root / "apps" / name) for name, path in APPS.items()}
        hashes = {name: app_hash(path) for name, path in apps.items()}
        policies = {name: root / "policies" / f"{name}.yaml" for name in files}
        for path in policies.values():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(PERMISSIVE_POLICY + f"approved-apps: [{hashes['fedheart']}, {hashes['floor']}]\n")
        return cls(root, files, root / "certs", policies, root / "hospital-state", root / "outputs", apps, hashes)


def snapshot(app_dir: Path, folder: Path) -> Path:
    """The files of ``app_dir``'s bundle (launcher.fab.fab_bytes), unpacked into ``folder``: every run
    submits this copy, so an edit to the working tree during the benchmark changes neither the code
    measured nor the hash the hospitals approved (the copy bundles to the same hash)."""
    with zipfile.ZipFile(io.BytesIO(fab_bytes(app_dir))) as bundle:
        for name in bundle.namelist():
            if not name.startswith(".info/"):  # Flower's manifest, written again by each build
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(bundle.read(name))
    return folder


class StreamLog:
    """``flwr run --stream``'s output, kept and stamped (``time.time()``) into the probe's lines."""

    def __init__(self, probe: Probe, path: Path) -> None:
        self.probe, self._file = probe, path.open("w")

    def write(self, text: str) -> None:
        now = time.time()
        for line in text.splitlines():
            self.probe.lines.append((now, "stream", line))
            self._file.write(f"{now:.3f} {line}\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def audit_entries(layout: Layout, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Each hospital's audit lines for ``run_id`` (the gate's and the launcher's), in order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name in layout.files:
        path = layout.state_root / name / "audit.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        out[name] = [e for e in map(json.loads, filter(None, lines)) if str(e.get("run")) == str(run_id)]
    return out


def measure(key: str, layout: Layout, rounds: int, overrides: list[str], repeat: int) -> dict[str, Any]:
    """One run of variant ``key`` on a fresh deployment of ``layout``; the raw row (see analyse)."""
    name, launcher, app = VARIANTS[key]
    app_dir = layout.apps[app]
    tag = f"{key}-{repeat}"
    work = layout.root / tag
    deployment = Deployment(work, layout.files, layout.outputs, certs=layout.certs, policy=layout.policies,
                            state_root=layout.state_root, launcher=launcher, app_dir=app_dir)
    row: dict[str, Any] = {"key": key, "name": name, "repeat": repeat, "launcher": launcher,
                           "app_hash": deployment.app_hash}
    floor_out = work / "floor.json"
    if key == "b":
        run_config: dict[str, Any] | None = {"rounds": rounds, "nodes": len(layout.files), "out": str(floor_out),
                                             "prompt-grid": True}
        fed_overrides: list[str] = []
    else:
        run_config, fed_overrides = None, [f"rounds={rounds}", f"output.run_name={tag}", *overrides]
    t0 = time.time()
    row["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
    with deployment:
        row["deployment_start_s"] = round(time.time() - t0, 2)
        assert deployment.link is not None
        metrics = [] if key == "b" else [layout.outputs / tag / "metrics.jsonl"]  # each round's row: its end
        probe = Probe(os.getpid(), [*deployment.logs(), *metrics])
        probe.skip_logs()
        stream = StreamLog(probe, work / "stream.log")
        with probe:
            started = time.time()
            try:
                run_id = submit_run(deployment.link, overrides=fed_overrides, run_config=run_config, app_dir=app_dir,
                                    stream=True, echo=stream, timeout=3600)  # type: ignore[arg-type]
            finally:
                stream.close()
            ended = time.time()
        row["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        record = wait_for_run(deployment.link, run_id, timeout=300)  # the stream has ended: one `flwr ls`
        pids = {name: {"supernode": n.process.popen.pid} for name, n in deployment.nodes.items() if n.process}
        for name, launcher_process in deployment.launchers.items():
            if launcher_process.process:
                pids[name]["launcher"] = launcher_process.process.popen.pid
    if record.get("status") != "finished:completed":
        raise RuntimeError(f"{tag}: run {run_id} ended {record.get('status')}: {record.get('status-details')}")
    row |= {"run_id": run_id, "started": started, "wall_s": round(ended - started, 3), "pids": pids,
            "flwr_elapsed_s": record.get("elapsed"), "peak_rss_mb": round(probe.peak_rss / 2**20, 1),
            "peak_processes": probe.peak_processes, "workdir": str(work)}
    if key == "b":
        floor = json.loads(floor_out.read_text())
        row |= {"round_s": floor["round_s"], "marks": floor["marks_epoch"]}
    else:
        run_dir = layout.outputs / tag
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        summary = json.loads((run_dir / "summary.json").read_text())
        row |= {"round_s": [r["seconds"] for r in rows if r["phase"] == "federation"],
                "server_phase_s": summary.get("phase_seconds", {}),
                "written": {f: (run_dir / f).stat().st_mtime for f in ("summary.json", "report.html")
                            if (run_dir / f).exists()}}
    return analyse(row, probe, audit_entries(layout, run_id))


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def summarize(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per variant: every round's seconds, their median, and the medians of the per-run figures."""
    out: dict[str, Any] = {}
    for key, rows in samples.items():
        if not rows:
            continue
        rounds = [s for r in rows for s in r["round_s"]]
        out[key] = {"name": rows[0]["name"], "round_s_all": [[round(s, 3) for s in r["round_s"]] for r in rows],
                    "round_s": _median(rounds), "wall_s": _median([r["wall_s"] for r in rows]),
                    "cpu_per_round_s": _median([r["rounds_cpu_s"] / len(r["round_s"]) for r in rows]),
                    "peak_rss_mb": _median([r["peak_rss_mb"] for r in rows]),
                    "deployment_start_s": _median([r["deployment_start_s"] for r in rows]),
                    "round_cpu_by_group": {g: _median([r["round_cpu_by_group"].get(g, 0.0) for r in rows])
                                           for g in sorted({g for r in rows for g in r["round_cpu_by_group"]})},
                    "latency_s": _median_latency(rows)}
    return out


def _median_latency(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    kinds: dict[str, dict[str, list[float]]] = {}
    count: dict[str, int] = {}
    for row in rows:
        for m in row["messages"]:
            count[m["type"]] = count.get(m["type"], 0) + 1
            for step, value in m.items():
                if step.endswith("_s") and value is not None:
                    kinds.setdefault(m["type"], {}).setdefault(step, []).append(value)
    return {t: {step: round(_median(v), 3) for step, v in steps.items()} | {"n": count[t]}
            for t, steps in kinds.items()}


def ratios(summary: dict[str, Any]) -> dict[str, float]:
    out = {}
    if "a" in summary and "b" in summary:
        out["a/b round_s"] = summary["a"]["round_s"] / summary["b"]["round_s"]
        out["a/b cpu_per_round_s"] = summary["a"]["cpu_per_round_s"] / summary["b"]["cpu_per_round_s"]
    if "a0" in summary and "a" in summary:
        out["a0/a round_s"] = summary["a0"]["round_s"] / summary["a"]["round_s"]
        out["a0/a cpu_per_round_s"] = summary["a0"]["cpu_per_round_s"] / summary["a"]["cpu_per_round_s"]
    return {k: round(v, 3) for k, v in out.items()}


def run(rounds: int, repeat: int, overrides: list[str], out: Path, keep: Path | None = None,
        skip: set[str] = frozenset(), tag: str = "") -> dict[str, Any]:
    """The whole benchmark; writes ``deploy-<date>[-tag].json`` and ``.md`` under ``out``."""
    from bench.perf import machine

    os.environ["PYTHONUNBUFFERED"] = "1"  # the deployment's processes write each log line at once (log times)
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
                              "rounds": rounds, "repeat": repeat, "overrides": overrides,
                              "load_1min_before": round(os.getloadavg()[0], 2)}
    samples: dict[str, list[dict[str, Any]]] = {k: [] for k in VARIANTS if k not in skip}
    with tempfile.TemporaryDirectory(prefix="fedheart-perf-deploy-") as tmp:
        root = keep or Path(tmp)
        layout = Layout.create(root)
        report["app_hashes"] = layout.hashes
        order = list(samples)
        for i in range(repeat):
            for key in order[i % len(order):] + order[:i % len(order)]:
                row = measure(key, layout, rounds, overrides, i + 1)
                samples[key].append(row)
                print(f"repeat {i + 1}/{repeat} {key}: rounds {[round(s, 2) for s in row['round_s']]} s, wall "
                      f"{row['wall_s']:.1f} s, load {row['loadavg_before'][0]} -> {row['loadavg_after'][0]}",
                      flush=True)
    report["load_1min_after"] = round(os.getloadavg()[0], 2)
    report["runs"] = samples
    conclude(report)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"deploy-{report['date'][:10]}{'-' + tag if tag else ''}"  # the day it started
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))
    return report


def conclude(report: dict[str, Any]) -> None:
    """Summary, ratios (of the medians over every round of every repeat; also within each repeat, whose
    runs ran back to back under about the same load) and the targets, from ``report["runs"]``."""
    report["summary"] = summarize(report["runs"])
    report["ratios"] = ratios(report["summary"])
    repeats = min(len(rows) for rows in report["runs"].values())
    report["ratios_per_repeat"] = [ratios(summarize({k: [rows[i]] for k, rows in report["runs"].items()}))
                                   for i in range(repeats)]
    report["targets"] = {k: {"target": f"{op} {v}", "value": report["ratios"].get(k),
                             "met": None if k not in report["ratios"] else
                             (report["ratios"][k] <= v if op == "<=" else report["ratios"][k] >= v)}
                         for k, (op, v) in TARGETS.items()}
    report["deploy"] = {"ratios": {k: report["ratios"][k] for k in TARGETS if k in report["ratios"]}}


def render(path: Path) -> None:
    """Recompute the summary and ratios of a ``deploy-*.json`` and rewrite it and its ``.md``."""
    report = json.loads(path.read_text())
    conclude(report)
    path.write_text(json.dumps(report, indent=1) + "\n")
    path.with_suffix(".md").write_text(markdown(report))
