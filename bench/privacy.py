"""Privacy benchmark: utility, epsilon actually spent, cost and a membership-inference audit.

    python bench/privacy.py [--seeds 0,1,2] [--split-seed 43] [--epsilons 0.5,1,2,4,8,inf]
                            [--out bench/results/privacy] [--overrides "train.lr=0.1 ..."]
                            [--cost-clients 4,16] [--parts sweep,cost,audit,simulation] (also: policy)
                            [--policy-rows] [--policy-epsilons 1,3] [--policy-overrides "train.lr=0.2"]
                            [--policy-jobs 2]

Sweep: for every epsilon (record-level, per hospital, delta = 1e-5; ``inf`` = no DP) and seed,
the federation of the four hospitals runs in this process with the very functions a ClientApp
calls (``HospitalData.statistics``, ``hospital.train_round`` with the hospital's ledger,
``hospital.evaluate_round``) and FedAvg weighted by training rows, as ``privacy=dp-sgd`` does.
Reported: mean-over-hospitals accuracy and AUC, pooled-test AUC, the largest epsilon any hospital
spent, and a loss-threshold membership-inference attack (attack AUC of -loss separating the
final model's training rows from held-out rows; 0.5 = no signal).

Audit: the same attack on an MLP made to overfit (2 x 256, Adam, 200 local steps), without DP and
with DP-SGD, since the default logistic regression leaves the attack little to find.

Cost: wall time of DP-SGD runs relative to plain FedAvg for 4 hospitals and for 16 synthetic
clients (each hospital's rows resampled with replacement into several clients).

Simulation: one configuration per privacy mode (none, dp-sgd, central-fixed server and client
clipping, central-adaptive) through the real Flower simulation (launcher SuperLink). Run it
under the e2e lock on shared machines: ``flock /tmp/fedheart-e2e.lock .venv/bin/python bench/privacy.py``.
Policy (``--policy-rows`` or ``--parts policy``; not in the default parts, ~1.5 min a run): the real
ClientApp and Federation over a LoopbackGrid, every hospital under a strict policy
(bench/privacy_policy.py); quality measured from the final model.
Writes ``privacy.md`` and ``privacy.json`` under --out; a run of some --parts keeps the other parts
already in ``privacy.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from fedheart import stats as fstats
from fedheart.config import AppConfig, load_config, train_config
from fedheart.hospital import HospitalData, configured_hospitals, evaluate_round, train_round
from fedheart.model import build_model, get_weights, set_weights
from fedheart.preprocess import Preprocessor
from fedheart.privacy import EPSILON, EXHAUSTED
from fedheart.privacy.dpsgd import DPSettings
from fedheart.privacy.ledger import Ledger
from fedheart.privacy.stats_dp import pooled_noise_std
from fedheart.splits import Split
from fedheart.summary import federation_metrics
from fedheart.tables import HospitalTable

DELTA = 1e-5
Weights = dict[str, np.ndarray]


def mean_sd(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    return float(np.mean(finite)), float(statistics.stdev(finite)) if len(finite) > 1 else 0.0


def fmt(pair: tuple[float, float], digits: int = 3) -> str:
    m, s = pair
    return "n/a" if not math.isfinite(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


def load_hospitals(cfg: AppConfig) -> list[HospitalData]:
    return list(configured_hospitals(cfg).values())


def synthetic_clients(hospitals: list[HospitalData], count: int, seed: int) -> list[HospitalData]:
    """``count`` clients: client i resamples (with replacement) the rows of hospital i mod 4.

    Train and test rows are resampled separately, so a client's test rows never leak into its training.
    """
    rng = np.random.default_rng(seed)
    clients = []
    for i in range(count):
        parent = hospitals[i % len(hospitals)]
        train = parent.train_frame.iloc[rng.integers(0, len(parent.train_frame), len(parent.train_frame))]
        test = parent.test_frame.iloc[rng.integers(0, len(parent.test_frame), len(parent.test_frame))]
        frame = pd.concat([train, test], ignore_index=True)
        table = HospitalTable(path=f"synthetic-{i}", frame=frame, has_header=False)
        split = Split(train=np.arange(len(train)), test=np.arange(len(train), len(frame)))
        clients.append(HospitalData(f"{parent.name}-{i}", table, split, parent.pipeline))
    return clients


def fedavg(updates: list[tuple[Weights, float]]) -> Weights:
    total = sum(w for _, w in updates)
    return {k: sum(u[k] * (w / total) for u, w in updates) for k in updates[0][0]}


def membership_auc(model: nn.Module, pre: Preprocessor, hospitals: list[HospitalData]) -> float:
    """Loss-threshold attack: AUC of -loss for 'training row' vs 'held-out row' over all hospitals."""
    model.eval()
    losses, member = [], []
    with torch.no_grad():
        for h in hospitals:
            for frame, y, label in ((h.train_frame, h.y_train, 1), (h.test_frame, h.y_test, 0)):
                logits = model(torch.as_tensor(pre.transform(frame)))
                loss = nn.functional.binary_cross_entropy_with_logits(
                    logits, torch.as_tensor(y, dtype=torch.float32), reduction="none")
                losses.append(loss.numpy())
                member.append(np.full(len(y), label))
    return float(roc_auc_score(np.concatenate(member), -np.concatenate(losses)))


def federate(cfg: AppConfig, hospitals: list[HospitalData], dp: DPSettings | None, seed: int) -> dict:
    """One federated run in this process: statistics, rounds of FedAvg, evaluation, MIA."""
    t0 = time.perf_counter()
    ledgers = {h.name: Ledger() for h in hospitals}
    parts = [h.statistics(dp, ledgers[h.name]) for h in hospitals]
    noise = pooled_noise_std(dp.stats_noise_multiplier, len(parts), count=False) if dp is not None else 0.0
    pre = hospitals[0].preprocessor(fstats.GlobalStats.from_totals(fstats.combine(parts), noise_std=noise))
    spec = cfg.model
    model = build_model(spec, pre.num_features, seed=seed)
    weights = get_weights(model)
    tcfg = train_config(cfg)
    epsilons = {h.name: 0.0 for h in hospitals}
    rounds_trained = 0
    for server_round in range(1, cfg.rounds + 1):
        updates = []
        for h in hospitals:
            new, metrics = train_round(h, pre, weights, spec, tcfg, seed=seed, server_round=server_round,
                                       dp=dp, ledger=ledgers[h.name])
            if dp is not None:
                epsilons[h.name] = float(metrics[EPSILON])
                if metrics[EXHAUSTED]:
                    continue
            updates.append((new, float(metrics["num-examples"])))
        if not updates:
            break
        weights = fedavg(updates)
        rounds_trained = server_round
    per = {h.name: evaluate_round(h, pre, weights, spec) for h in hospitals}
    fed = federation_metrics(per)
    set_weights(model, weights)
    return {"mean-accuracy": fed["mean-accuracy"], "mean-auc": fed["mean-auc"], "pooled-auc": fed["pooled-auc"],
            "hospitals": {k: {"accuracy": v["accuracy"], "auc": v["auc"]} for k, v in per.items()},
            "epsilon": max(epsilons.values()) if dp is not None else float("inf"), "epsilons": epsilons,
            "noise-multipliers": {k: ledger.noise_multiplier for k, ledger in ledgers.items()},
            "mia-auc": membership_auc(model, pre, hospitals), "rounds": rounds_trained,
            "seconds": time.perf_counter() - t0}


def dp_settings(cfg: AppConfig, epsilon: float, seed: int) -> DPSettings | None:
    if math.isinf(epsilon):
        return None
    p = cfg.privacy
    return DPSettings(noise_multiplier=None, epsilon=epsilon, delta=DELTA, max_grad_norm=p.max_grad_norm,
                      rounds=cfg.rounds, stats_noise_multiplier=p.stats_noise_multiplier,
                      noise_seed=zlib.crc32(f"bench-{seed}".encode()))


def sweep(cfg: AppConfig, plain: AppConfig, hospitals: list[HospitalData], epsilons: list[float],
          seeds: list[int]) -> dict:
    """``cfg`` (privacy=dp-sgd and its tuned training) for finite epsilons; ``plain`` (no DP) for inf."""
    rows = {}
    for eps in epsilons:
        runs = []
        for seed in seeds:
            run = federate(plain if math.isinf(eps) else cfg, hospitals, dp_settings(cfg, eps, seed), seed)
            runs.append(run)
            print(f"[privacy] epsilon {eps} seed {seed}: mean acc {run['mean-accuracy']:.3f} "
                  f"AUC {run['mean-auc']:.3f} spent {run['epsilon']:.3f} MIA {run['mia-auc']:.3f} "
                  f"({run['seconds']:.0f}s)", flush=True)
        rows[str(eps)] = {"runs": runs, **{k: mean_sd([r[k] for r in runs]) for k in
                                           ("mean-accuracy", "mean-auc", "pooled-auc", "epsilon", "mia-auc",
                                            "seconds")}}
    return rows


# An MLP that overfits the ~600 training rows: the membership-inference attack has something to find.
AUDIT = ["model=mlp", "model.hidden=256", "model.layers=2", "model.dropout=0.0", "train.optimizer=adam",
         "train.lr=0.003", "train.local_steps=200", "train.batch_size=16"]


def audit(common: list[str], hospitals: list[HospitalData], epsilons: list[float], seeds: list[int]) -> dict:
    """Loss-threshold membership inference on an overfitting MLP, without DP and with DP-SGD."""
    plain, private = load_config([*common, *AUDIT]), load_config(["privacy=dp-sgd", *common, *AUDIT])
    return sweep(private, plain, hospitals, epsilons, seeds)


def cost(cfg: AppConfig, hospitals: list[HospitalData], client_counts: list[int], seed: int) -> dict:
    """Wall time of DP-SGD (epsilon 1) vs plain FedAvg, same rounds and steps, 4 and 16 clients."""
    out = {}
    for count in client_counts:
        clients = hospitals if count == len(hospitals) else synthetic_clients(hospitals, count, seed)
        plain = federate(cfg, clients, None, seed)
        private = federate(cfg, clients, dp_settings(cfg, 1.0, seed), seed)
        out[str(count)] = {"plain-seconds": plain["seconds"], "dp-seconds": private["seconds"],
                           "ratio": private["seconds"] / plain["seconds"],
                           "plain-accuracy": plain["mean-accuracy"], "dp-accuracy": private["mean-accuracy"]}
        print(f"[privacy] cost, {count} clients: plain {plain['seconds']:.1f}s, DP-SGD {private['seconds']:.1f}s "
              f"(x{out[str(count)]['ratio']:.1f})", flush=True)
    return out


SIMULATIONS = {
    "none": [],
    "dp-sgd (epsilon 1)": ["privacy=dp-sgd", "privacy.epsilon=1.0", f"privacy.delta={DELTA}"],
    "central-fixed, server clipping": ["privacy=central-fixed", "privacy.clipping=server"],
    "central-fixed, client clipping": ["privacy=central-fixed", "privacy.clipping=client"],
    "central-fixed, server clipping, z = 8 (hospital-level epsilon about 0.9)": [
        "privacy=central-fixed", "privacy.noise_multiplier=8.0"],
    "central-adaptive, server clipping": ["privacy=central-adaptive"],
    "dp-sgd (epsilon 1) + secagg": ["privacy=dp-sgd", "privacy.epsilon=1.0", f"privacy.delta={DELTA}",
                                    "aggregation=secagg"],
    "central-fixed, client clipping + secagg": ["privacy=central-fixed", "privacy.clipping=client",
                                                "aggregation=secagg"],
}


def simulations(out: Path, common: list[str], pattern: str) -> dict:
    """One real Flower simulation per privacy mode whose label matches ``pattern`` (15 rounds, 4 hospitals)."""
    root = str(Path(__file__).resolve().parent.parent)  # launcher/ sits beside fedheart/ in the checkout
    if root not in sys.path:
        sys.path.insert(0, root)
    from launcher.flower import SuperLink, submit_run, wait_for_run

    results = {}
    link = SuperLink(out / "superlink", extra_env={"FEDHEART_OUTPUT_DIR": str(out / "runs")})
    with link:
        for label, overrides in SIMULATIONS.items():
            if not re.search(pattern, label):
                continue
            name = f"{re.sub('[^a-z0-9]+', '-', label.split(',')[0])}-{len(results)}-{time.strftime('%H%M%S')}"
            run_id = submit_run(link, overrides=[*common, *overrides, f"output.run_name={name}"], stream=False,
                                echo=None, federation={"num-supernodes": 4, "client-resources-num-cpus": 1})
            record = wait_for_run(link, run_id)
            row: dict = {"status": record["status"], "seconds": float(record.get("elapsed", float("nan"))),
                         "status-details": record.get("status-details")}
            summary_path = out / "runs" / name / "summary.json"
            if summary_path.exists():
                summary = json.loads(summary_path.read_text())
                privacy = summary.get("privacy", {})
                row |= {"mean-accuracy": summary["means"]["accuracy"], "mean-auc": summary["means"]["auc"],
                        "pooled-auc": summary["federation"]["pooled-auc"], "rounds": summary["rounds"],
                        "epsilon": privacy.get("epsilon"), "delta": privacy.get("delta"),
                        "stopped_reason": summary.get("stopped_reason")}
            results[label] = row
            print(f"[privacy] simulation {label}: {row}", flush=True)
    return results


def policy_module():  # type: ignore[no-untyped-def]
    """bench/privacy_policy.py (the strict-policy rows), importable however this file was started."""
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from bench import privacy_policy

    return privacy_policy


def markdown(results: dict, args: argparse.Namespace) -> str:
    cfg = results["config"]
    lines = [
        "# Privacy benchmark\n",
        f"Machine: {results['machine']}. Seeds: {results['seeds']}; split seed {results['split_seed']} "
        "(43 = FLamby's test rows). Record-level DP per hospital at delta = 1e-5; `inf` = no DP, with the "
        "project's own training defaults (lr 0.05, 100 local steps, batch 16); finite epsilons use "
        "privacy=dp-sgd's tuned defaults. "
        f"DP-SGD settings: {cfg}.\n",
        "## Utility and epsilon actually spent (in-process federation, same code as the ClientApp)\n",
        "Mean ± sd over seeds. Accuracy and AUC are means over the four hospitals (own test rows); "
        "'epsilon spent' is the largest cumulative epsilon any hospital reported (statistics + all rounds); "
        "MIA AUC is the loss-threshold membership-inference attack on the final model (0.5 = chance).\n",
        "| target epsilon | mean accuracy | mean AUC | pooled-test AUC | epsilon spent | MIA AUC | s / run |",
        "|---|---|---|---|---|---|---|",
    ]
    for eps, row in results.get("sweep", {}).items():
        lines.append(f"| {eps} | {fmt(row['mean-accuracy'])} | {fmt(row['mean-auc'])} | {fmt(row['pooled-auc'])} | "
                     f"{fmt(row['epsilon'])} | {fmt(row['mia-auc'])} | {fmt(row['seconds'], 1)} |")
    if results.get("audit"):
        lines += ["\n## Membership-inference audit: an overfitting MLP (2 x 256, Adam, 200 local steps)\n",
                  f"Overrides: `{' '.join(AUDIT)}`; seeds {results.get('audit_seeds')}. Loss-threshold attack "
                  "AUC over all training rows (members) vs all held-out rows; 0.5 = the attack learns nothing "
                  "(with ~600 members and 254 non-members a chance AUC has sd ~0.02).\n",
                  "| epsilon | mean accuracy | MIA AUC | epsilon spent |", "|---|---|---|---|"]
        for eps, row in results["audit"].items():
            lines.append(f"| {eps} | {fmt(row['mean-accuracy'])} | {fmt(row['mia-auc'])} | {fmt(row['epsilon'])} |")
    if results.get("cost"):
        lines += ["\n## Cost: DP-SGD (epsilon 1) vs plain FedAvg, same rounds and steps, one process\n",
                  "| clients | plain s | DP-SGD s | ratio | plain acc. | DP-SGD acc. |", "|---|---|---|---|---|---|"]
        for count, row in results["cost"].items():
            lines.append(f"| {count} | {row['plain-seconds']:.1f} | {row['dp-seconds']:.1f} | {row['ratio']:.1f} | "
                         f"{row['plain-accuracy']:.3f} | {row['dp-accuracy']:.3f} |")
        lines.append("\n16 clients: each hospital's training and test rows resampled with replacement into 4 "
                     "clients (simple synthetic clients; not a realistic data generator).")
    if results.get("simulation"):
        lines += ["\n## Real Flower simulation, one run per mode (15 rounds, 4 hospitals)\n",
                  "| mode | status | mean accuracy | mean AUC | pooled AUC | epsilon | wall s |",
                  "|---|---|---|---|---|---|---|"]
        for label, row in results["simulation"].items():
            eps = row.get("epsilon")
            lines.append(f"| {label} | {row['status']} | {row.get('mean-accuracy', float('nan')):.3f} | "
                         f"{row.get('mean-auc', float('nan')):.3f} | {row.get('pooled-auc', float('nan')):.3f} | "
                         f"{'n/a' if eps is None else f'{eps:.3f}'} | {row['seconds']:.0f} |")
        lines.append("\ncentral-* epsilons are hospital-level (client-level) and not comparable with dp-sgd's "
                     "record-level epsilon; central-adaptive has no accountant in Flower 1.42.")
    lines += policy_module().markdown(results, fmt) if results.get("policy") else []
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--split-seed", type=int, default=43)
    parser.add_argument("--epsilons", default="0.5,1,2,4,8,inf")
    parser.add_argument("--out", type=Path, default=Path("bench/results/privacy"))
    parser.add_argument("--overrides", default="", help="extra Hydra overrides for the sweep, e.g. 'train.lr=0.1'")
    parser.add_argument("--cost-clients", default="4,16", help="client counts for the cost measurement ('' = skip)")
    parser.add_argument("--parts", default="sweep,cost,audit,simulation", help="which parts to run (also: policy)")
    parser.add_argument("--policy-rows", action="store_true",
                        help="run only the strict-policy rows (--parts policy; ~10 min, so not in the default run)")
    parser.add_argument("--policy-epsilons", default="1,3")
    parser.add_argument("--policy-overrides", default="", help="server train.* overrides for the policy rows")
    parser.add_argument("--policy-evaluation", default="dp", choices=("dp", "full"), help="the policy's evaluation")
    parser.add_argument("--policy-delta", type=float, default=1e-6, help="the policy's delta")
    parser.add_argument("--policy-jobs", type=int, default=1, help="policy runs at a time (one process each)")
    parser.add_argument("--audit-epsilons", default="inf,8,1")
    parser.add_argument("--simulations", default=".", help="regex: the simulation modes (labels) to run")
    parser.add_argument("--audit-seeds", default="0,1")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    epsilons = [float(e) for e in args.epsilons.split(",") if e]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    common = [f"data.split_seed={args.split_seed}", *args.overrides.split()]
    cfg = load_config(["privacy=dp-sgd", *common])
    hospitals = load_hospitals(cfg)
    path = out / "privacy.json"
    results: dict = json.loads(path.read_text()) if path.exists() else {}
    parts = {"policy"} if args.policy_rows else set(args.parts.split(","))
    results |= {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"Python {platform.python_version()}",
    } | ({} if parts <= {"policy"} else {  # the policy rows keep their own seeds and settings
        "seeds": seeds, "split_seed": args.split_seed, "delta": DELTA,
        "config": {"rounds": cfg.rounds, **{f"train.{k}": v for k, v in vars(cfg.train).items()},
                   "privacy.max_grad_norm": cfg.privacy.max_grad_norm,
                   "privacy.stats_noise_multiplier": cfg.privacy.stats_noise_multiplier},
    })
    if "sweep" in parts:
        results["sweep"] = {**results.get("sweep", {}), **sweep(cfg, load_config(common), hospitals, epsilons, seeds)}
        results["sweep"] = dict(sorted(results["sweep"].items(), key=lambda kv: float(kv[0])))
    if "audit" in parts:
        results["audit_seeds"] = [int(s) for s in args.audit_seeds.split(",") if s]
        results["audit"] = audit(common, hospitals, [float(e) for e in args.audit_epsilons.split(",") if e],
                                 results["audit_seeds"])
    if "cost" in parts:
        results["cost"] = cost(cfg, hospitals, [int(c) for c in args.cost_clients.split(",") if c], seeds[0])
    if "simulation" in parts:
        results["simulation"] = {**results.get("simulation", {}), **simulations(out, common, args.simulations)}
        results["simulation"] = {k: results["simulation"][k] for k in SIMULATIONS if k in results["simulation"]}
    if "policy" in parts:
        pp, over = policy_module(), args.policy_overrides.split()
        variant = {"evaluation": args.policy_evaluation, "delta": args.policy_delta, "jobs": args.policy_jobs}
        results.pop("policy_seeds", None)  # each row holds its seeds
        results["policy"] = {**results.get("policy", {}), **pp.policy_rows(
            common, [float(e) for e in args.policy_epsilons.split(",") if e], seeds, over, mean_sd, **variant)}
        results["policy_noise"] = pp.noise_costs(common, [])
    path.write_text(json.dumps(results, indent=2, default=float))
    text = markdown(results, args)
    (out / "privacy.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
