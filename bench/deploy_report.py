"""Reading a deployment run back (bench/perf_deploy.py): phases and rounds from the stamped log lines,
each message's way from its arrival at the SuperNode to its reply, and the markdown report."""

from __future__ import annotations

import json
import re
import statistics
from datetime import datetime
from typing import Any

from bench.deploy_probe import Probe

ANSI = re.compile(r"\x1b\[[0-9;]*m")
RECEIVING = re.compile(r"Receiving: (\S+) message")
HELD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "  # launcher.hospital.warm.RUNNING, asctime first
                  r".*task \d+ of run (\d+): child (\d+) runs its (\S+) message")
ACQUIRED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*task \d+ of run \d+: app \S+ approved, forking")


def _clean(lines: list[tuple[float, str, str]]) -> list[tuple[float, str, str]]:
    return [(t, src, ANSI.sub("", text)) for t, src, text in lines]


def round_ends(lines: list[tuple[float, str, str]]) -> dict[int, float]:
    """When fedheart's ServerApp appended each round's federation row to metrics.jsonl (tailed)."""
    ends: dict[int, float] = {}
    for t, src, text in lines:
        if src.endswith("/metrics.jsonl") and '"federation"' in text:
            ends.setdefault(int(json.loads(text)["round"]), t)
    return ends


def phases_of(row: dict[str, Any], messages: list[dict[str, Any]], lines: list[tuple[float, str, str]],
              ended: float) -> list[tuple[str, float, float]]:
    """(name, start, end) epochs of the run's phases, contiguous from ``flwr run`` to the stream's end.

    Rounds: (b) between the floor ServerApp's own marks (before round 1, after each round); fedheart:
    each round ends when its row is appended to metrics.jsonl and round 1 starts its ``seconds``
    earlier. A round's train phase ends with the last train reply sent by a SuperNode; its evaluate
    phase is the rest. fedheart's statistics phase runs from the first message's arrival at a
    SuperNode; the summary and the report end at their files' modification times.
    """
    started = row["started"]
    if row["key"] == "b":
        bounds = list(row["marks"])
        out = [("submit -> round 1", started, bounds[0])]
    else:
        ends = round_ends(lines)
        first = min(m["t"] for m in messages)
        bounds = [ends[1] - row["round_s"][0]] + [ends[k] for k in sorted(ends)]
        out = [("submit -> first message at a node", started, first), ("statistics", first, bounds[0])]
    for k in range(1, len(bounds)):
        t0, t1 = bounds[k - 1], bounds[k]
        split = max((m["t"] + m["sent_s"] for m in messages
                     if m["type"] == "train" and t0 <= m["t"] < t1 and m["sent_s"] is not None), default=None)
        if split is None:
            out.append((f"round {k}", t0, t1))
        else:
            out += [(f"round {k} train", t0, split), (f"round {k} evaluate", split, t1)]
    last = bounds[-1]
    for name, written in (("baselines, summary", "summary.json"), ("report", "report.html")):
        if written in row.get("written", {}):
            out.append((name, last, row["written"][written]))
            last = row["written"][written]
    out.append(("end of run -> stream ended", last, ended))
    return out


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _asctime(text: str) -> float:
    """Epoch of a ``logging`` asctime (local time, milliseconds)."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def messages_of(row: dict[str, Any], probe: Probe, lines: list[tuple[float, str, str]],
                audits: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One entry per message a SuperNode received (``t``: the epoch of its ``Receiving:`` line), with the
    seconds from then to the launcher's taking the task ((a) only: its ``approved, forking`` line), to
    its ClientApp process's start (forked child / ``flwr-clientapp``), to the message in a forked
    child's hands ((a) only), to the handler's first line (the gate's ``received``) and its audit line
    (fedheart only), and to the reply sent."""
    by_pid = {pid: e for (pid, _c), e in probe.procs.items()}
    out = []
    for name, pids in row["pids"].items():
        def hospital_of(entry: Any, _pids: dict[str, int] = pids) -> bool:
            parent = by_pid.get(entry.parent)
            return entry.parent == _pids.get("launcher") or (parent is not None and parent.parent == _pids["supernode"])

        node_lines = [(t, text) for t, src, text in lines if src == f"{name}/{name}.log"]
        arrivals = [(t, m[1]) for t, text in node_lines if (m := RECEIVING.search(text))]
        sent = [t for t, text in node_lines if "Sent successfully" in text]
        starts = sorted(probe.started(e) for e in probe.procs.values() if e.group == "clientapp" and hospital_of(e))
        launcher_lines = [text for _t, src, text in lines if src == f"{name}/launcher.log"]
        acquired = [_asctime(m[1]) for text in launcher_lines if (m := ACQUIRED.search(text))]
        held = [_asctime(m[1]) for text in launcher_lines if (m := HELD.search(text))]
        gate = [_epoch(e["time"]) for e in audits.get(name, []) if e.get("by") != "launcher"]
        handler = [_epoch(e["received"]) for e in audits.get(name, []) if e.get("by") != "launcher" and "received" in e]
        for i, (t, kind) in enumerate(arrivals):
            until = arrivals[i + 1][0] if i + 1 < len(arrivals) else float("inf")

            def after(times: list[float], _t: float = t, _until: float = until) -> float | None:
                return next((round(x - _t, 3) for x in times if _t - 0.1 <= x < _until - 0.1), None)

            out.append({"hospital": name, "type": kind, "t": t, "acquired_s": after(acquired),
                        "process_s": after(starts), "held_s": after(held), "handler_s": after(handler),
                        "gate_done_s": after(gate),
                        "sent_s": after(sent)})
    return sorted(out, key=lambda m: m["t"])


def analyse(row: dict[str, Any], probe: Probe, audits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """``row`` with its phases (wall, CPU by group, peak RSS), messages and the rounds' CPU. A round
    phase's message also gets ``wait_s``: from the phase's start (its train messages: the round's
    start; evaluate: the last train reply sent) to its arrival at the SuperNode."""
    lines = _clean(probe.lines)
    ended = row["started"] + row["wall_s"]
    messages = messages_of(row, probe, lines, audits)
    phases = []
    for name, t0, t1 in phases_of(row, messages, lines, ended):
        phases.append({"phase": name, "from_s": round(t0 - row["started"], 3), **probe.window(t0, t1)})
        for m in messages:
            if name.startswith("round ") and t0 <= m["t"] < t1:
                m["wait_s"] = round(m["t"] - t0, 3)
    for m in messages:
        m["arrived"] = round(m.pop("t") - row["started"], 3)
    rounds = [p for p in phases if p["phase"].startswith("round ")]
    by_group: dict[str, float] = {}
    for p in rounds:
        for g, v in p["cpu_s"].items():
            by_group[g] = by_group.get(g, 0.0) + v
    n = max(len(row["round_s"]), 1)
    row |= {"phases": phases, "messages": messages,
            "rounds_cpu_s": round(sum(p["cpu_total_s"] for p in rounds), 2),
            "round_cpu_by_group": {g: round(v / n, 3) for g, v in sorted(by_group.items())},
            "run_window": probe.window(row["started"], ended), "other_processes": probe.others[:20],
            "peak_rss_mb_by_group": {g: round(max(p["rss"].get(g, 0) for p in probe.timeline) / 2**20, 1)
                                     for g in sorted({g for p in probe.timeline for g in p["rss"]})}}
    return row


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def phase_table(rows: list[dict[str, Any]]) -> list[str]:
    """Medians over the repeats of each phase's wall s, CPU s by group and peak RSS."""
    names = list(dict.fromkeys(p["phase"] for r in rows for p in r["phases"]))
    groups = sorted({g for r in rows for p in r["phases"] for g in p["cpu_s"]})
    lines = ["| phase | wall s | " + " | ".join(groups) + " | CPU all | peak RSS MiB |",
             "|---|---:|" + "---:|" * (len(groups) + 2)]
    for name in names:
        ps = [p for r in rows for p in r["phases"] if p["phase"] == name]
        cpu = {g: _med([p["cpu_s"].get(g, 0.0) for p in ps]) for g in groups}
        lines.append(f"| {name} | {_med([p['wall_s'] for p in ps]):.2f} | "
                     + " | ".join(f"{cpu[g]:.2f}" for g in groups)
                     + f" | {_med([p['cpu_total_s'] for p in ps]):.2f} | {_med([p['peak_rss_mb'] for p in ps]):.0f} |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["summary"]
    lines = ["# Deployment: fedheart (hospital launcher / stock SuperExec) against Flower's floor\n",
             f"{report['date']}; {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}, flwr "
             f"{m['flwr']}, torch {m['torch']}. Local TLS deployment (launcher.deploy.Deployment), 4 UCI hospitals, "
             f"{report['rounds']} rounds, {report['repeat']} repeat(s) alternated. 1-minute load before → after the "
             f"benchmark: {report['load_1min_before']} → {report['load_1min_after']}.\n",
             "| run | s per round, every round of every repeat | median s / round | CPU s / round | run wall s "
             "(median) | peak RSS MiB | deployment start s | load per run |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for key, v in s.items():
        loads = ", ".join(f"{r['loadavg_before'][0]:.1f}→{r['loadavg_after'][0]:.1f}" for r in report["runs"][key])
        every = " / ".join(" ".join(f"{x:.2f}" for x in rs) for rs in v["round_s_all"])
        lines.append(f"| ({key}) {v['name']} | {every} | {v['round_s']:.2f} | {v['cpu_per_round_s']:.2f} | "
                     f"{v['wall_s']:.1f} | {v['peak_rss_mb']:.0f} | {v['deployment_start_s']:.1f} | {loads} |")
    lines += ["", "| ratio | value | target | met |", "|---|---:|---|---|"]
    for k, v in report["ratios"].items():
        t = report["targets"].get(k)
        lines.append(f"| {k} | {v:.2f} | {t['target'] if t else ''} | "
                     f"{('yes' if t['met'] else 'no') if t else ''} |")
    for i, per in enumerate(report.get("ratios_per_repeat", [])):
        lines.append(f"\nRepeat {i + 1} alone (its three runs back to back): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in per.items()))
    lines += ["", "CPU seconds per round by process group (median over the repeats; all cores together):", "",
              "| run | " + " | ".join(groups := sorted({g for v in s.values() for g in v["round_cpu_by_group"]}))
              + " |", "|---|" + "---:|" * len(groups)]
    for key, v in s.items():
        lines.append(f"| ({key}) | " + " | ".join(f"{v['round_cpu_by_group'].get(g, 0.0):.2f}" for g in groups) + " |")
    lines += ["", "Per message (medians over the repeats): seconds from its round phase's start (train: the round's "
              "start; evaluate: the last train reply sent) to its arrival at the SuperNode (its `Receiving:` log "
              "line), then from that arrival to: the launcher's taking the task ((a) only), the ClientApp's process "
              "start (forked child / `flwr-clientapp`), the message in the child's hands ((a) only), the handler's "
              "first line (the gate's `received` time; fedheart only), the gate's audit line (the handler done), "
              "the reply sent.", "",
              "| run | message | n | phase start → arrival | arrival → taken by launcher | → process | "
              "→ held by child | → handler's first line | → gate done | → reply sent |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, v in s.items():
        for kind, lat in v["latency_s"].items():
            cells = [f"{lat[k]:.2f}" if k in lat else "–" for k in ("wait_s", "acquired_s", "process_s", "held_s",
                                                                           "handler_s", "gate_done_s", "sent_s")]
            lines.append(f"| ({key}) | {kind} | {lat['n']} | " + " | ".join(cells) + " |")
    for key in s:
        lines += ["", f"({key}) phases, medians over the repeats (wall s, CPU s by process group, peak RSS of "
                  "the whole tree; RSS sums double-count shared pages):", "", *phase_table(report["runs"][key])]
    return "\n".join(lines) + "\n"
