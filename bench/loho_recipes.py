"""Training recipes on the federation's rows (``bench/quality.py --loho``): how far from issue 15's
reference is the project's recipe, and would another setting close the gap?

For each held-out hospital, centrally and in this process (the federation matches the central model
on the same rows, bench/loho.py): the project's model with the project's defaults and with one setting
changed at a time, and scikit-learn's ``LogisticRegression`` over a range of ``C`` (its L2 strength;
``C=1`` is the reference itself), all on every row of the other hospitals (the federation's rows with
``data.train_fraction=1.0``). Held-out AUC on all of H's rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedheart.config import load_config
from fedheart.hospital import HospitalData

RECIPES: dict[str, list[str]] = {  # label: overrides of the project's defaults
    "defaults": [],
    "L2 (weight decay 0.002, about C=1)": ["train.weight_decay=0.002"],
    "lr 0.01": ["train.lr=0.01"],
    "45 rounds": ["rounds=45"],
    "MLP": ["model=mlp"],
}
SKLEARN_C = (0.01, 0.1, 1.0, 10.0)


def recipe_scan(data: dict[str, HospitalData], held: str, seeds: list[int]) -> dict[str, float]:
    """Held-out AUC per recipe (mean over ``seeds``) and per scikit-learn ``C``, on all the other rows."""
    from bench.loho import central_reference, central_same_rows

    out: dict[str, float] = {}
    for label, overrides in RECIPES.items():
        cfg = load_config(overrides)
        out[label] = float(np.mean([central_same_rows(cfg, data, held, seed, all_rows=True)["auc"] for seed in seeds]))
    for c in SKLEARN_C:
        out[f"scikit-learn C={c:g}"] = central_reference(data, held, c=c)["auc"]
    return out


def recipes_markdown(results: dict[str, Any], gap: float) -> list[str]:
    """The recipe table (rows: held-out hospitals), or nothing when the results hold no scan."""
    scans = {held: row["recipes"] for held, row in results.items() if "recipes" in row}
    if not scans:
        return []
    labels = list(next(iter(scans.values())))
    lines = ["", "### Training recipes on the federation's rows (central, in process; held-out AUC)", "",
             "Each on all rows of the other hospitals (the federation's rows); the target is the issue's reference "
             f"minus {gap:g}.", "",
             "| held out | target | " + " | ".join(labels) + " |", "|---" * (len(labels) + 2) + "|"]
    for held, scan in scans.items():
        target = results[held]["central (issue reference)"]["auc"] - gap
        lines.append(f"| {held} | {target:.3f} | " + " | ".join(f"{scan[k]:.3f}" for k in labels) + " |")
    return lines
