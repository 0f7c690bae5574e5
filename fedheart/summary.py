"""Federation-level numbers from per-hospital results, and the final summary table."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedheart.histograms import auc_from_histograms


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def federation_metrics(per_hospital: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Unweighted means over hospitals, example-weighted loss, and the pooled-test AUC."""
    rows = list(per_hospital.values())
    if not rows:
        return {}
    n = np.array([float(r["num-examples"]) for r in rows])
    pos = np.sum([r["hist-pos"] for r in rows], axis=0)
    neg = np.sum([r["hist-neg"] for r in rows], axis=0)
    losses = np.array([float(r["loss"]) for r in rows])
    return {
        "mean-accuracy": _nanmean([float(r["accuracy"]) for r in rows]),
        "mean-auc": _nanmean([float(r["auc"]) for r in rows]),
        "pooled-auc": auc_from_histograms(pos, neg),
        "loss": float((losses * n).sum() / n.sum()) if n.sum() else math.nan,
        "num-examples": float(n.sum()),
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def summary_table(final: Mapping[str, Mapping[str, Any]], baselines: Mapping[str, Mapping[str, Any]],
                  train_sizes: Mapping[str, int]) -> tuple[str, dict[str, Any]]:
    """Markdown table of final per-hospital metrics beside majority and local-only baselines."""
    fed = federation_metrics(final)
    header = ("| hospital | train rows | test rows | accuracy | AUC | majority acc. | "
              "local-only acc. | local-only AUC |")
    lines = [header, "|" + "---|" * 8]
    data: dict[str, Any] = {"hospitals": {}, "federation": fed}
    for name, m in final.items():
        b = baselines.get(name, {})
        row = {"train-rows": train_sizes.get(name), "test-rows": int(m["num-examples"]),
               "accuracy": m["accuracy"], "auc": m["auc"], "loss": m["loss"],
               "majority-accuracy": b.get("majority-accuracy"), "local-accuracy": b.get("local-accuracy"),
               "local-auc": b.get("local-auc")}
        data["hospitals"][name] = row
        lines.append(f"| {name} | {_fmt(row['train-rows'])} | {row['test-rows']} | {_fmt(row['accuracy'])} | "
                     f"{_fmt(row['auc'])} | {_fmt(row['majority-accuracy'])} | {_fmt(row['local-accuracy'])} | "
                     f"{_fmt(row['local-auc'])} |")
    means = {k: _nanmean([r[k] for r in data["hospitals"].values() if r[k] is not None])
             for k in ("accuracy", "auc", "majority-accuracy", "local-accuracy", "local-auc")}
    data["means"] = means
    lines.append(f"| **mean over hospitals** | | | {_fmt(means['accuracy'])} | {_fmt(means['auc'])} | "
                 f"{_fmt(means['majority-accuracy'])} | {_fmt(means['local-accuracy'])} | "
                 f"{_fmt(means['local-auc'])} |")
    lines.append(f"| **pooled test set** | | {int(fed['num-examples'])} | | {_fmt(fed['pooled-auc'])} | | | |")
    return "\n".join(lines), data
