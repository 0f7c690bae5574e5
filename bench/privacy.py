"""Privacy benchmark: utility, epsilon actually spent, cost and a membership-inference audit.

    python bench/privacy.py [--seeds 0,1,2] [--split-seed 43] [--epsilons 0.5,1,2,4,8,inf]
                            [--out bench/results/privacy] [--overrides "train.lr=0.1 ..."]
                            [--cost-clients 4,16] [--parts sweep,cost,audit,simulation] (also: policy)
                            [--policy-rows] [--policy-epsilons 1,3] [--policy-overrides "train.lr=0.2"]
                            [--policy-jobs 2]

Sweep (bench/privacy_sweep.py): for every epsilon (record-level, per hospital, delta = 1e-5;
``inf`` = no DP) and seed, the real ServerApp ``Federation`` and the four hospitals' ClientApps
run in this process over a ``LoopbackGrid`` (Flower's FedAvg weighted by training rows, each
hospital's DP-SGD ledger in its node state, DP noise fixed per seed by ``privacy.noise_seed``).
Reported: mean-over-hospitals accuracy and AUC, pooled-test AUC of the model after the last round,
the largest epsilon any hospital spent, and a loss-threshold membership-inference attack (attack
AUC of -loss separating the final model's training rows from held-out rows; 0.5 = no signal).

Audit: the same attack on an MLP made to overfit (2 x 256, Adam, 200 local steps), without DP and
with DP-SGD, since the default logistic regression leaves the attack little to find.

Cost: wall time of DP-SGD runs relative to plain FedAvg for 4 hospitals and for 16 synthetic
clients (each hospital's rows resampled with replacement into several client files), the same
Federation over the in-process grid.

Simulation: one configuration per privacy mode (none, dp-sgd, central-fixed server and client
clipping, central-adaptive) through the real Flower simulation (launcher SuperLink). Run it
under the e2e lock on shared machines: ``flock /tmp/fedheart-e2e.lock .venv/bin/python bench/privacy.py``.
Policy (``--policy-rows`` or ``--parts policy``; not in the default parts, ~1.5 min a run): the real
ClientApp and Federation over a LoopbackGrid, every hospital under a strict policy
(bench/privacy_policy.py); quality measured from the final model.
Writes ``privacy.md`` (bench/privacy_report.py) and ``privacy.json`` under --out; a run of some
--parts keeps the other parts already in ``privacy.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent  # launcher/ and bench/ sit beside fedheart/ in the checkout
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.privacy_report import markdown  # noqa: E402
from bench.privacy_sweep import DELTA, METHOD, audit, cost, mean_sd, sweep  # noqa: E402
from fedheart.config import load_config  # noqa: E402

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
    """bench/privacy_policy.py (the strict-policy rows; imported only when they are run or shown)."""
    from bench import privacy_policy

    return privacy_policy


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
        results["sweep"] = {**results.get("sweep", {}), **sweep(cfg, load_config(common), epsilons, seeds)}
        results["sweep"] = dict(sorted(results["sweep"].items(), key=lambda kv: float(kv[0])))
    if "audit" in parts:
        results["audit_seeds"] = [int(s) for s in args.audit_seeds.split(",") if s]
        results["audit_method"] = METHOD
        results["audit"] = audit(common, [float(e) for e in args.audit_epsilons.split(",") if e],
                                 results["audit_seeds"])
    if "cost" in parts:
        results["cost_method"] = METHOD
        results["cost"] = cost(cfg, [int(c) for c in args.cost_clients.split(",") if c], seeds[0])
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
    text = markdown(results, policy_module().markdown if results.get("policy") else None)
    (out / "privacy.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
