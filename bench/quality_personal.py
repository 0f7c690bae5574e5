"""``bench/quality.py --personalization``: rows of personalised models beside the strategies.

Each method runs through the real Flower simulation like a strategy row (``personalization=<name>`` with
the overrides of :data:`RECIPES`); its row holds each hospital's *personal* model's accuracy on its own test
rows (reported by the hospital after the last round). FL4Health's published means (Tavakoli et al., MLHC
2024, FLamby protocol) stand beside the ``flamby`` rows. Targets: under ``flamby`` the best personalised
mean >= 0.82; under ``project`` every hospital's personal accuracy >= its local-only accuracy (the same
runs' baseline) and the mean >= FedAvg's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# The overrides of each method's runs, per protocol: FedPer and FENDA-FL need a body to share (an MLP).
MLP = ["model=mlp", "model.name=mlp"]  # model.name after protocol=flamby, whose package sets logreg
RECIPES: dict[str, dict[str, list[str]]] = {  # chosen on seed 0 (bench/results/quality-personal/README.md)
    "flamby": {"finetune": [*MLP, "personalization.lr=0.01", "personalization.steps=300"],
               "ditto": ["personalization.lr=0.01"], "fedper": MLP, "fenda": MLP},
    "project": {"finetune": ["personalization.lr=0.01", "personalization.steps=20", "personalization.validation=0.2"],
                "ditto": ["personalization.lam=1.0"], "fedper": MLP, "fenda": MLP},
}
FL4HEALTH = {"fedper": 0.814, "fenda": 0.815, "ditto": 0.802, "apfl": 0.801, "fedavg": 0.724}  # mean accuracy
TARGET_FLAMBY = 0.82


def personal_run(summary: dict[str, Any]) -> dict[str, Any]:
    """The personal model's numbers of one run's summary, in the shape of a strategy run."""
    section = summary["personalization"]["hospitals"]
    hospitals = {name: {"accuracy": r["personal-accuracy"], "auc": r["personal-auc"],
                        "global-accuracy": r["global-accuracy"], "local-accuracy": r["local-only-accuracy"]}
                 for name, r in section.items()}
    accuracies = [v["accuracy"] for v in hospitals.values() if v["accuracy"] is not None]
    return {"hospitals": hospitals, "mean-accuracy": float(np.mean(accuracies)) if accuracies else float("nan"),
            "pooled-auc": float("nan")}


def targets(rows: dict[str, dict[str, Any]], raw: dict[str, list[dict]], protocol: str, methods: list[str],
            hospitals: list[str]) -> list[str]:
    """The issue's targets for one protocol, met or missed, from the tabulated rows."""
    labels = [f"{m} (personal)" for m in methods if f"{m} (personal)" in rows]
    if not labels:
        return []
    lines = []
    if protocol == "flamby":
        best = max(labels, key=lambda label: rows[label]["mean-accuracy"][0])
        value = rows[best]["mean-accuracy"][0]
        lines.append(f"- flamby: best personalised mean accuracy {value:.3f} ({best}); target >= {TARGET_FLAMBY}: "
                     f"{'met' if value >= TARGET_FLAMBY else 'missed'}")
        return lines
    fedavg = rows.get("fedavg", {}).get("mean-accuracy", (float("nan"), 0.0))[0]
    for label in labels:
        method = label.split(" ")[0]
        runs = raw.get(method, [])
        below = sorted({h for r in runs for h in hospitals
                        if r["hospitals"][h]["accuracy"] is not None and r["hospitals"][h]["local-accuracy"] is not None
                        and r["hospitals"][h]["accuracy"] < r["hospitals"][h]["local-accuracy"]})
        personal_means = {h: rows[label][h][0] for h in hospitals}
        local = {h: float(np.mean([r["hospitals"][h]["local-accuracy"] for r in runs])) for h in hospitals}
        worse = [h for h in hospitals if personal_means[h] < local[h]]
        mean = rows[label]["mean-accuracy"][0]
        lines.append(f"- project, {method}: hospitals below their local-only accuracy (mean over seeds): "
                     f"{', '.join(worse) or 'none'} (in some seed: {', '.join(below) or 'none'}); mean {mean:.3f} vs "
                     f"FedAvg {fedavg:.3f}: {'met' if not worse and mean >= fedavg else 'missed'}")
    return lines
