"""What SecAgg+ costs: a SecAgg+ run against plain FedAvg, same settings, same benchmark run.

    python -m bench.secagg_cost [--clients 4 16] [--rounds 3] [--out bench/results/secagg/]

For each federation size it runs ``aggregation=plain`` and ``aggregation=secagg`` back to back on
one simulation SuperLink and records wall time (submit to finish), the mean round time (train +
evaluate, from metrics.jsonl), the SuperLink's compute time and network traffic (``flwr ls``).
Bytes per client per round = run traffic / (clients x rounds): every message of the run, so the
difference between the two modes is what SecAgg+'s four stages add. 16 clients list each UCI
file four times (``data.hospitals``); the ClientApp names repeated files apart.
Writes ``secagg_cost.json`` and ``secagg_cost.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedheart.runs import RunDir, write_json, write_text
from fedheart.schema import HOSPITALS
from launcher.flower import REPO_ROOT, SuperLink, submit_run, wait_for_run

DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "secagg"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "uci-heart-disease"
MODES = ("plain", "secagg")


def _hospitals(clients: int) -> list[str]:
    keys = [h.key for h in HOSPITALS]
    return [keys[i % len(keys)] for i in range(clients)]


def run_once(link: SuperLink, outputs: Path, mode: str, clients: int, rounds: int) -> dict[str, Any]:
    """One simulation; its timings and traffic."""
    name = f"{mode}-{clients}"
    overrides = [f"aggregation={mode}", f"rounds={rounds}", f"min_hospitals={clients}",
                 f"data.hospitals=[{','.join(_hospitals(clients))}]", "baselines=false", f"output.run_name={name}"]
    started = time.perf_counter()
    run_id = submit_run(link, overrides=overrides, stream=False, echo=None,
                        federation={"num-supernodes": clients, "client-resources-num-cpus": 1})
    record = wait_for_run(link, run_id, timeout=1800)
    wall = time.perf_counter() - started
    if record.get("status") != "finished:completed":
        raise RuntimeError(f"{name}: run {run_id} ended {record.get('status')}: {record.get('status-details')}")
    rows = RunDir(outputs / name).read_metrics()
    round_s = [r["seconds"] for r in rows if r["phase"] == "federation"]
    secagg_s = [r["seconds"] for r in rows if r["phase"] == "secagg"]
    traffic = record.get("network-traffic", {})
    total = int(traffic.get("total-bytes", 0))
    return {
        "mode": mode, "clients": clients, "rounds": rounds, "run_id": run_id, "wall_s": wall,
        "elapsed_s": record.get("elapsed"), "round_s_mean": float(np.mean(round_s)),
        "secagg_stages_s_mean": float(np.mean(secagg_s)) if secagg_s else None,
        "compute_s": record.get("compute-time", {}).get("total-seconds"),
        "traffic_bytes": total, "bytes_per_client_round": total / (clients * rounds),
    }


def measure(clients: Sequence[int] = (4, 16), rounds: int = 3, data_dir: Path = DEFAULT_DATA) -> dict[str, Any]:
    """Plain and SecAgg+ runs for each size on one SuperLink; ratios SecAgg+/plain."""
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="secagg-bench-") as tmp:
        work, outputs = Path(tmp), Path(tmp) / "outputs"
        env = {"FEDHEART_DATA_DIR": str(data_dir), "FEDHEART_OUTPUT_DIR": str(outputs)}
        with SuperLink(work, extra_env=env) as link:
            for n in clients:
                for mode in MODES:
                    results.append(run_once(link, outputs, mode, n, rounds))
                    print(json.dumps(results[-1]), flush=True)
    ratios = {}
    for n in clients:
        plain, secure = (next(r for r in results if r["clients"] == n and r["mode"] == m) for m in MODES)
        ratios[str(n)] = {k: secure[k] / plain[k] for k in ("wall_s", "round_s_mean", "bytes_per_client_round")
                          if plain[k]}
    return {"results": results, "secagg_over_plain": ratios, "machine": f"{platform.machine()}, "
            f"{os.cpu_count()} CPUs, {platform.python_version()}", "date": time.strftime("%Y-%m-%d %H:%M")}


def to_markdown(report: dict[str, Any]) -> str:
    lines = ["# SecAgg+ cost against plain FedAvg", "",
             f"{report['machine']}, {report['date']}; Flower simulation, 1 CPU per client, logistic regression. "
             "Bytes: all messages of the run (statistics, train, evaluate, baselines) / (clients x rounds).", "",
             "| clients | mode | wall s | round s (train+eval) | SecAgg+ stages s | bytes / client / round |",
             "|---|---|---|---|---|---|"]
    for r in report["results"]:
        stages = f"{r['secagg_stages_s_mean']:.2f}" if r["secagg_stages_s_mean"] is not None else "-"
        lines.append(f"| {r['clients']} | {r['mode']} | {r['wall_s']:.1f} | {r['round_s_mean']:.2f} | {stages} | "
                     f"{r['bytes_per_client_round']:,.0f} |")
    lines += ["", "| clients | wall time x | round time x | bytes x |", "|---|---|---|---|"]
    for n, q in report["secagg_over_plain"].items():
        lines.append(f"| {n} | {q.get('wall_s', float('nan')):.2f} | {q.get('round_s_mean', float('nan')):.2f} | "
                     f"{q.get('bytes_per_client_round', float('nan')):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("FEDHEART_DATA_DIR") or DEFAULT_DATA))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    report = measure(args.clients, args.rounds, args.data)
    write_json(args.out / "secagg_cost.json", report)
    write_text(args.out / "secagg_cost.md", to_markdown(report))
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
