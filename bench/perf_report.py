"""``perf.md``: the medians, ratios, timelines and CPU by phase of ``bench/perf.py``'s runs."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

TARGET_A_OVER_B = 1.25

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
