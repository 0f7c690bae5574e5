"""Scale benchmark: fedheart with 4 to 1000 simulated hospitals, a fixed number sampled per round.

    python bench/scale.py --out bench/results/perf [--clients 4,16,64,256,1000] [--per-round 10]
                          [--rounds 3]

For every N it writes N synthetic hospitals (:mod:`fedheart.synthetic`, rows drawn from the real
UCI hospitals with their own size, label balance and missingness), runs the real simulation with
``data.partition_dir`` pointing at them, ``min_hospitals=N``, ``strategy.params.fraction_train``
and ``fraction_evaluate`` = per-round / N and ``baselines=false``, and records the per-round wall
time, the statistics phase (every hospital answers once), the baselines phase (the final round's
hospitals only) and the peak RSS of the SuperLink's process tree (bench/perf.py). Writes
``scale.json``, ``scale.md`` and ``scale.png`` under --out. Run it under the e2e lock.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.perf import DEFAULT_DATA, _mean, machine, run_fedheart  # noqa: E402
from fedheart.synthetic import generate  # noqa: E402


def run_size(work: Path, clients: int, per_round: int, rounds: int) -> dict[str, Any]:
    data = work / f"hospitals-{clients}"
    t0 = time.perf_counter()
    generate(data, clients, DEFAULT_DATA, seed=0)
    generated = time.perf_counter() - t0
    sampled = min(per_round, clients)
    fraction = sampled / clients
    overrides = [f"data.partition_dir={data}", f"min_hospitals={clients}", "baselines=false",
                 f"strategy.params.fraction_train={fraction}", f"strategy.params.fraction_evaluate={fraction}",
                 f"round_timeout={max(600, 5 * clients)}"]
    row = run_fedheart(work, rounds, clients, overrides, name=f"scale-{clients}")
    steady = row["round_s"][1:] or row["round_s"]
    return row | {"clients": clients, "sampled": sampled, "generate_s": generated,
                  "round_s_mean": _mean(row["round_s"]), "steady_round_s": _mean(steady)}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["clients"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(n, [r["steady_round_s"] for r in rows], "o-", label="round (rounds 2..)")
    left.plot(n, [r["phase_s"].get("statistics", float("nan")) for r in rows], "s--", label="statistics phase")
    left.set(xscale="log", xlabel="simulated hospitals N", ylabel="seconds", title="Wall time")
    left.legend()
    right.plot(n, [r["peak_rss_mb"] / 1024 for r in rows], "o-")
    right.set(xscale="log", xlabel="simulated hospitals N", ylabel="GiB", title="Peak RSS, process tree",
              ylim=(0, None))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = ["# Scale: simulated hospitals with sampled clients per round\n",
             f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB; {report['date']}. "
             f"{report['rounds']} rounds, {report['per_round']} clients sampled per round (all when fewer), "
             "baselines=false, 1 CPU per client (2 Ray actors).\n",
             "| N | sampled | s / round (all) | s / round (2..) | statistics phase s | baselines phase s | "
             "run wall s | peak RSS GiB | load before → after |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in report["runs"]:
        p = r["phase_s"]
        lines.append(f"| {r['clients']} | {r['sampled']} | {r['round_s_mean']:.2f} | {r['steady_round_s']:.2f} | "
                     f"{p.get('statistics', float('nan')):.1f} | {p.get('baselines', float('nan')):.1f} | "
                     f"{r['wall_s']:.0f} | {r['peak_rss_mb'] / 1024:.2f} | "
                     f"{r['loadavg_before'][0]:.1f} → {r['loadavg_after'][0]:.1f} |")
    return "\n".join(lines) + "\n\n![scale](scale.png)\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "perf")
    parser.add_argument("--clients", default="4,16,64,256,1000")
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedheart-scale-") as tmp:
        for n in (int(x) for x in args.clients.split(",")):
            rows.append(run_size(Path(tmp), n, args.per_round, args.rounds))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "overrides"}), flush=True)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "rounds": args.rounds,
              "per_round": args.per_round, "runs": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "scale.md").write_text(markdown(report))
    plot(rows, args.out / "scale.png")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
