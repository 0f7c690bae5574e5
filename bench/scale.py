"""Scale benchmark: fedheart with 4 to 1000 simulated hospitals, a fixed number sampled per round.

    python bench/scale.py --out bench/results/perf [--clients 4,16,64,256,1000] [--per-round 10]
                          [--rounds 3] [--fraction 0.1 --tag fraction]

``--per-round K`` samples K clients per round whatever N (the round time should stay flat);
``--fraction F`` samples max(2, round(F * N)) (the round time should grow with the sampled clients).

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


def sampled_clients(clients: int, per_round: int, fraction: float | None) -> int:
    """How many of ``clients`` a round samples: a fixed number, or a fraction (at least 2)."""
    if fraction is not None:
        return min(clients, max(2, round(fraction * clients)))
    return min(per_round, clients)


def run_size(work: Path, clients: int, sampled: int, rounds: int) -> dict[str, Any]:
    data = work / f"hospitals-{clients}"
    t0 = time.perf_counter()
    generate(data, clients, DEFAULT_DATA, seed=0)
    generated = time.perf_counter() - t0
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
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 4))
    left.plot(n, [r["steady_round_s"] for r in rows], "o-", label="round (rounds 2..)")
    left.plot(n, [r["phase_s"].get("statistics", float("nan")) for r in rows], "s--", label="statistics phase")
    left.set(xscale="log", xlabel="simulated hospitals N", ylabel="seconds", title="Wall time")
    left.legend()
    k = [r["sampled"] for r in rows]
    middle.plot(k, [r["steady_round_s"] for r in rows], "o-")
    middle.set(xlabel="clients sampled per round", ylabel="seconds per round (rounds 2..)",
               title="Round time vs sampled clients", xlim=(0, None), ylim=(0, None))
    right.plot(n, [r["peak_rss_mb"] / 1024 for r in rows], "o-")
    right.set(xscale="log", xlabel="simulated hospitals N", ylabel="GiB", title="Peak RSS, process tree",
              ylim=(0, None))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = ["# Scale: simulated hospitals with sampled clients per round\n",
             f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB; {report['date']}. "
             f"{report['rounds']} rounds, {report['sampling']}, "
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
    parser.add_argument("--fraction", type=float, default=None, help="sample this fraction of N (min 2)")
    parser.add_argument("--tag", default="", help="suffix of the output files")
    args = parser.parse_args(argv)
    sampling = (f"{args.fraction:g} of the clients sampled per round (at least 2)" if args.fraction is not None
                else f"{args.per_round} clients sampled per round (all when fewer)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedheart-scale-") as tmp:
        for n in (int(x) for x in args.clients.split(",")):
            rows.append(run_size(Path(tmp), n, sampled_clients(n, args.per_round, args.fraction), args.rounds))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "overrides"}), flush=True)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "rounds": args.rounds,
              "per_round": args.per_round, "fraction": args.fraction, "sampling": sampling, "runs": rows}
    stem = "scale" + (f"-{args.tag}" if args.tag else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report).replace("scale.png", f"{stem}.png"))
    plot(rows, args.out / f"{stem}.png")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
