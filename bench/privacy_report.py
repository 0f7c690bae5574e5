"""``privacy.md``: the privacy benchmark's tables (``bench/privacy.py``) from its results."""

from __future__ import annotations

import math
from typing import Any

from bench.privacy_sweep import AUDIT, METHOD

# How a part was measured: by this code (the real Federation), or by the earlier in-process loop (results
# that record no method).
HOW = {METHOD: "the real Federation and ClientApps over an in-process grid",
       None: "in-process loop of the ClientApp's functions and its own FedAvg, before the benchmark drove the "
             "real Federation"}


def fmt(pair: tuple[float, float], digits: int = 3) -> str:
    m, s = pair
    return "n/a" if not math.isfinite(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


def sweep_how(rows: dict[str, Any]) -> str:
    """How the sweep's rows were measured (older rows, kept when some epsilons are rerun, may differ)."""
    methods = {row.get("method") for row in rows.values()}
    if len(methods) <= 1:
        return HOW.get(next(iter(methods), METHOD), HOW[None])
    return f"{HOW[METHOD]}; rows marked † with the {HOW[None]}"


def markdown(results: dict[str, Any], policy_markdown: Any = None) -> str:
    """The whole report; ``policy_markdown(results, fmt)``: the strict-policy section (bench/privacy_policy.py)."""
    cfg = results["config"]
    lines = [
        "# Privacy benchmark\n",
        f"Machine: {results['machine']}. Seeds: {results['seeds']}; split seed {results['split_seed']} "
        "(43 = FLamby's test rows). Record-level DP per hospital at delta = 1e-5; `inf` = no DP, with the "
        "project's own training defaults (lr 0.05, 100 local steps, batch 16); finite epsilons use "
        "privacy=dp-sgd's tuned defaults. "
        f"DP-SGD settings: {cfg}.\n",
        f"## Utility and epsilon actually spent ({sweep_how(results.get('sweep', {}))})\n",
        "Mean ± sd over seeds. Accuracy and AUC are means over the four hospitals (own test rows) of the model "
        "after the last round; 'epsilon spent' is the largest cumulative epsilon any hospital reported "
        "(statistics + all rounds); MIA AUC is the loss-threshold membership-inference attack on that model "
        "(0.5 = chance). DP noise fixed per seed.\n",
        "| target epsilon | mean accuracy | mean AUC | pooled-test AUC | epsilon spent | MIA AUC | s / run |",
        "|---|---|---|---|---|---|---|",
    ]
    mixed = len({row.get("method") for row in results.get("sweep", {}).values()}) > 1
    for eps, row in results.get("sweep", {}).items():
        mark = " †" if mixed and row.get("method") != METHOD else ""
        lines.append(f"| {eps}{mark} | {fmt(row['mean-accuracy'])} | {fmt(row['mean-auc'])} | "
                     f"{fmt(row['pooled-auc'])} | {fmt(row['epsilon'])} | {fmt(row['mia-auc'])} | "
                     f"{fmt(row['seconds'], 1)} |")
    if results.get("audit"):
        lines += ["\n## Membership-inference audit: an overfitting MLP (2 x 256, Adam, 200 local steps)\n",
                  f"Overrides: `{' '.join(AUDIT)}`; seeds {results.get('audit_seeds')}; "
                  f"{HOW.get(results.get('audit_method'), HOW[None])}. Loss-threshold attack "
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
        if results.get("cost_method") == METHOD:
            lines.append("\nEach run: the real Federation (statistics, then rounds of train and evaluate) and "
                         "ClientApps over an in-process LoopbackGrid, every message serialised. 16 clients: each "
                         "hospital's rows resampled with replacement into 4 client files, each split as a hospital "
                         "splits its file (a row drawn twice can be on both sides: accuracy optimistic; simple "
                         "synthetic clients, not a realistic data generator).")
        else:
            lines.append(f"\nMeasured with the {HOW[None]} (the final model evaluated once). 16 clients: each "
                         "hospital's training and test rows resampled with replacement into 4 clients (simple "
                         "synthetic clients; not a realistic data generator).")
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
    if results.get("policy") and policy_markdown is not None:
        lines += policy_markdown(results, fmt)
    return "\n".join(lines) + "\n"
