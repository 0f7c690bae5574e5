"""Quality benchmark: strategies vs pooled and local-only training, through the real Flower simulation.

    python bench/quality.py [--strategies fedavg,fedprox,...] [--protocol flamby,project]
                            [--seeds 0,1,2] [--split-seed 43] [--out bench/results/quality]
                            [--personalization finetune,ditto,fedper,fenda]
    python bench/quality.py --loho [--seeds 0,1,2] [--calibration-fraction 0.3,0.5] [--calibration-splits 200]

Every federated run goes through a real SuperLink in simulation mode (one per benchmark, reused
by all runs); pooled training (all hospitals' training rows in one place, the same preprocessing
and the same number of gradient steps as the whole federation) runs in this process with the same
core code. The local-only baseline comes from each run's summary. Writes ``quality.md`` and
``quality.json`` under --out; run folders are kept under ``--out/runs`` and reused when the
benchmark is started again (it resumes where it stopped). ``--personalization``: one row per method
with each hospital's personal model (bench/quality_personal.py), FL4Health's published numbers and the
issue's targets below the tables. ``--loho``: leave-one-hospital-out with
site recalibration instead (bench/loho.py), written to ``loho.md`` and ``loho.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fedheart import stats as fstats
from fedheart.config import AppConfig, load_config, train_config
from fedheart.histograms import auc_from_histograms, score_histograms
from fedheart.hospital import HospitalData, configured_hospitals
from fedheart.model import build_model
from fedheart.preprocess import Preprocessor, flamby_preprocessor
from fedheart.training import TensorBatches, evaluate, train
from launcher.flower import REPO_ROOT, SuperLink, submit_run, wait_for_run

if str(REPO_ROOT) not in sys.path:  # `python bench/quality.py` puts bench/ first, not the repository
    sys.path.insert(0, str(REPO_ROOT))
from bench import quality_personal as qp

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedadagrad", "fedyogi")
PROTOCOLS = ("flamby", "project")


def mean_sd(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    return float(np.mean(finite)), float(statistics.stdev(finite)) if len(finite) > 1 else 0.0


def pooled_run(cfg: AppConfig, seed: int) -> dict:
    """Centralised training on the union of the hospitals' training rows, evaluated per hospital."""
    t0 = time.perf_counter()
    hospitals: list[HospitalData] = list(configured_hospitals(cfg).values())
    pooled_train = pd.concat([h.train_frame for h in hospitals])
    if cfg.data.pipeline == "flamby":
        pre: Preprocessor = flamby_preprocessor(pooled_train)  # FLamby's pooled normalisation
    else:
        pre = hospitals[0].preprocessor(fstats.GlobalStats.from_totals(fstats.local_stats(pooled_train)))
    x = pre.transform(pooled_train)
    y = np.concatenate([h.y_train for h in hospitals])
    model = build_model(cfg.model, pre.num_features, seed=seed)
    tcfg = train_config(cfg)
    steps = cfg.rounds * tcfg.local_steps * len(hospitals)  # the whole federation's gradient steps
    train(model, TensorBatches(x, y, tcfg.batch_size, seed=seed), tcfg, steps)
    per, pos, neg = {}, [], []
    for h in hospitals:
        result = evaluate(model, pre.transform(h.test_frame), h.y_test)
        per[h.name] = {"accuracy": result.accuracy, "auc": result.auc}
        p, n = score_histograms(h.y_test, result.scores)
        pos.append(p)
        neg.append(n)
    return {"hospitals": per, "mean-accuracy": float(np.mean([v["accuracy"] for v in per.values()])),
            "pooled-auc": auc_from_histograms(np.sum(pos, 0), np.sum(neg, 0)),
            "seconds": time.perf_counter() - t0, "steps": steps}


def federated_run(link: SuperLink, overrides: list[str], out: Path, name: str, existing_only: bool,
                  app_dir: Path = REPO_ROOT) -> dict | None:
    """One run through the real simulation; a finished run folder is reused (the benchmark resumes)."""
    run_dir = out / "runs" / name
    record_path = run_dir / "flwr-record.json"
    if existing_only and not record_path.exists():
        return None
    if record_path.exists():
        record = json.loads(record_path.read_text())
    else:
        run_id = submit_run(link, overrides=[*overrides, f"output.run_name={name}"], stream=False, echo=None,
                            federation={"num-supernodes": 4, "client-resources-num-cpus": 1}, app_dir=app_dir)
        record = wait_for_run(link, run_id)
        if record["status"] != "finished:completed":
            raise RuntimeError(f"run {name} failed: {record.get('status-details')}")
        record_path.write_text(json.dumps(record))
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"hospitals": {k: {"accuracy": v["accuracy"], "auc": v["auc"], "local-accuracy": v["local-accuracy"],
                              "local-auc": v["local-auc"], "majority-accuracy": v["majority-accuracy"]}
                          for k, v in summary["hospitals"].items()},
            "mean-accuracy": summary["means"]["accuracy"], "pooled-auc": summary["federation"]["pooled-auc"],
            "seconds": float(record["elapsed"]), "round-seconds": summary["seconds"] / max(summary["rounds"], 1),
            "rounds": summary["rounds"]}


def aggregate(runs: list[dict], hospitals: list[str]) -> dict:
    row = {"mean-accuracy": mean_sd([r["mean-accuracy"] for r in runs]),
           "pooled-auc": mean_sd([r["pooled-auc"] for r in runs]),
           "seconds": mean_sd([r["seconds"] for r in runs]),
           "round-seconds": mean_sd([r.get("round-seconds", float("nan")) for r in runs])}
    for h in hospitals:
        row[h] = mean_sd([r["hospitals"][h]["accuracy"] for r in runs])
    return row


def local_only(runs: list[dict], hospitals: list[str]) -> dict:
    per = {h: mean_sd([r["hospitals"][h]["local-accuracy"] for r in runs]) for h in hospitals}
    means = [float(np.nanmean([r["hospitals"][h]["local-accuracy"] for h in hospitals])) for r in runs]
    return {"mean-accuracy": mean_sd(means), "pooled-auc": (float("nan"), float("nan")),
            "seconds": (float("nan"), float("nan")), "round-seconds": (float("nan"), float("nan")), **per}


def fmt(pair: tuple[float, float], digits: int = 3) -> str:
    m, s = pair
    return "n/a" if not np.isfinite(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


def markdown(results: dict, hospitals: list[str], args: argparse.Namespace) -> str:
    lines = [f"# Quality benchmark\n\nSeeds: {args.seeds}; split seed: {args.split_seed}; test rows: FLamby's "
             f"(254 rows) when split seed = 43. Machine: {results['machine']}.\n",
             "Mean ± sd over seeds. Accuracy per hospital on its own test rows; pooled AUC over all test rows.\n"]
    for protocol, rows in results["protocols"].items():
        notes = results.get("personal-notes", {}).get(protocol, [])
        lines.append(f"\n## Protocol `{protocol}`\n")
        lines.append("| method | mean acc. (hospitals) | pooled-test AUC | " + " | ".join(hospitals)
                     + " | wall s / run | s / round |")
        lines.append("|" + "---|" * (len(hospitals) + 5))
        for method, row in rows.items():
            lines.append(f"| {method} | {fmt(row['mean-accuracy'])} | {fmt(row['pooled-auc'])} | "
                         + " | ".join(fmt(row[h]) for h in hospitals)
                         + f" | {fmt(row['seconds'], 1)} | {fmt(row['round-seconds'], 2)} |")
        if notes:
            lines += ["", *notes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--protocol", default=",".join(PROTOCOLS), help="flamby, project or both")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--split-seed", type=int, default=43)
    parser.add_argument("--out", type=Path, default=Path("bench/results/quality"))
    parser.add_argument("--personalization", default="",
                        help="personalisation methods, e.g. finetune,ditto,fedper,fenda")
    parser.add_argument("--existing-only", action="store_true",
                        help="start no new run: tabulate the finished runs under --out/runs")
    parser.add_argument("--loho", action="store_true", help="leave-one-hospital-out and site recalibration")
    parser.add_argument("--calibration-fraction", default="0.3,0.5", help="--loho: calibration split(s)")
    parser.add_argument("--calibration-splits", type=int, default=200, help="--loho: random calibration splits")
    args = parser.parse_args(argv)
    if args.loho:
        return run_loho(args)
    strategies = [s for s in args.strategies.split(",") if s]
    protocols = [p for p in args.protocol.split(",") if p]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run `finally`/`with` exits: stop the SuperLink
    base = load_config()
    hospitals = list(base.data.hospitals)
    results: dict = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                                f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
                     "seeds": seeds, "split_seed": args.split_seed, "protocols": {}, "raw": {}}
    # SuperLink state lives outside the repository: `flwr run .` packages the app folder.
    from launcher.fab import snapshot_app

    work = Path(tempfile.mkdtemp(prefix="fedheart-quality-"))
    app = snapshot_app(REPO_ROOT, work / "app")  # later edits of the checkout change no run of this benchmark
    link = SuperLink(work / "link", extra_env={"FEDHEART_OUTPUT_DIR": str(out / "runs")})
    with link:
        for protocol in protocols:
            common = [f"protocol={protocol}", f"data.split_seed={args.split_seed}"]
            rows: dict = {}
            raw: dict = {}
            cfg = load_config(common)
            pooled = [pooled_run(cfg, seed) for seed in seeds]
            raw["pooled"] = pooled
            rows["pooled training"] = aggregate(pooled, hospitals)
            for strategy in strategies:
                runs = []
                for seed in seeds:
                    name = f"{protocol}-{strategy}-seed{seed}-split{args.split_seed}"
                    print(f"[quality] {name} ...", flush=True)
                    run = federated_run(link, [*common, f"strategy={strategy}", f"seed={seed}"], out, name,
                                        args.existing_only, app)
                    if run is None:
                        continue
                    runs.append(run)
                    print(f"[quality]   mean acc {runs[-1]['mean-accuracy']:.3f}, "
                          f"pooled AUC {runs[-1]['pooled-auc']:.3f}, {runs[-1]['seconds']:.0f}s", flush=True)
                if not runs:
                    continue
                raw[strategy] = runs
                if "local-only" not in rows:
                    rows["local-only"] = local_only(runs, hospitals)
                rows[strategy] = aggregate(runs, hospitals)
            methods = [m for m in args.personalization.split(",") if m]
            for method in methods:
                runs = []
                for seed in seeds:
                    name = f"{protocol}-personal-{method}-seed{seed}-split{args.split_seed}"
                    print(f"[quality] {name} ...", flush=True)
                    overrides = [*common, f"personalization={method}", *qp.RECIPES[protocol][method], f"seed={seed}"]
                    run = federated_run(link, overrides, out, name, args.existing_only, app)
                    if run is None:
                        continue
                    summary = json.loads((out / "runs" / name / "summary.json").read_text())
                    runs.append({**run, **qp.personal_run(summary)})
                    print(f"[quality]   personal mean acc {runs[-1]['mean-accuracy']:.3f}", flush=True)
                if runs:
                    raw[method] = runs
                    rows[f"{method} (personal)"] = aggregate(runs, hospitals)
            if methods:
                published = ", ".join(f"{k} {v:.3f}" for k, v in qp.FL4HEALTH.items())
                results.setdefault("personal-notes", {})[protocol] = [
                    *([f"FL4Health's published mean accuracy (FLamby protocol): {published}."]
                      if protocol == "flamby" else []),
                    "Personal rows: each hospital's personal model on its own test rows; recipes: "
                    + "; ".join(f"{m}: {' '.join(qp.RECIPES[protocol][m]) or 'defaults'}" for m in methods) + ".",
                    *qp.targets(rows, raw, protocol, methods, hospitals)]
            results["protocols"][protocol] = rows
            results["raw"][protocol] = raw
    (out / "quality.json").write_text(json.dumps(results, indent=2, default=float))
    text = markdown(results, hospitals, args)
    (out / "quality.md").write_text(text)
    print(text)
    return 0


def run_loho(args: argparse.Namespace) -> int:
    """``--loho``: every hospital held out in turn (bench/loho.py); the app is submitted as it is now."""
    from bench.loho import loho
    from bench.loho import markdown as loho_markdown
    from launcher.fab import snapshot_app

    seeds = [int(s) for s in args.seeds.split(",") if s]
    fractions = [float(f) for f in args.calibration_fraction.split(",") if f]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="fedheart-loho-"))
    app = snapshot_app(REPO_ROOT, work / "app")  # later edits of the checkout change no run of this benchmark
    with SuperLink(work / "link", extra_env={"FEDHEART_OUTPUT_DIR": str(out / "runs")}) as link:
        results = loho(link, app, out, seeds, fractions, args.calibration_splits)
    (out / "loho.json").write_text(json.dumps(results, indent=1, default=float))
    text = loho_markdown(results, seeds, fractions, args.calibration_splits)
    (out / "loho.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
