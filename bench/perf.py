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
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python bench/perf.py` puts bench/ first, not the repository
    sys.path.insert(0, str(REPO_ROOT))

# The parts (bench/perf_sim.py, perf_costs.py, perf_report.py); names other benchmarks and tests import from here.
from bench.perf_costs import import_breakdown, message_bytes, privacy_costs, startup  # noqa: E402
from bench.perf_report import (  # noqa: E402
    TARGET_A_OVER_B,
    _mean,
    cpu_by_phase,
    cpu_by_phase_table,
    machine,
    markdown,
    median_row,
    summarize,
)
from bench.perf_sim import (  # noqa: E402
    DEFAULT_DATA,
    FLOOR_APP,
    TreeSampler,
    load_window,
    measure_flower,
    pooled_child,
    run_fedheart,
    run_floor,
    run_pooled,
)

__all__ = ["DEFAULT_DATA", "FLOOR_APP", "TARGET_A_OVER_B", "TreeSampler", "_mean", "cpu_by_phase", "cpu_by_phase_table",
           "import_breakdown", "load_window", "machine", "main", "markdown", "measure_flower", "median_row",
           "message_bytes", "privacy_costs", "run_fedheart", "run_floor", "run_pooled", "startup", "summarize"]


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
