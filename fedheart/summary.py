"""Federation-level numbers from per-hospital results, and the final summary table.

A hospital without test rows (``data.train_fraction=1.0`` in a ``data.holdout`` run: it trains on all
its rows) replies with ``num-examples`` 0 and NaN metrics: it is left out of every mean and of the
pooled test set, and the summary says it has no internal test rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedheart import clinical
from fedheart.histograms import auc_from_histograms


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


NO_TEST_ROWS = "no internal test rows (data.train_fraction=1: it trains on all its rows)"


def has_test_rows(m: Mapping[str, Any]) -> bool:
    """Whether a hospital's evaluation covered at least one row."""
    n = m.get("num-examples")
    return n is not None and math.isfinite(float(n)) and float(n) > 0


def federation_metrics(per_hospital: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Unweighted means over hospitals, example-weighted loss, and the pooled-test AUC (hospitals without
    test rows left out: NaN when none has any)."""
    if not per_hospital:
        return {}
    rows = [r for r in per_hospital.values() if has_test_rows(r)]
    if not rows:
        return {"mean-accuracy": math.nan, "mean-auc": math.nan, "pooled-auc": math.nan, "loss": math.nan,
                "num-examples": 0.0}
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


def _pair(low: Any, high: Any) -> list[float | None]:
    return [None if v is None or not math.isfinite(float(v)) else float(v) for v in (low, high)]


def clinical_row(m: Mapping[str, Any], baseline: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The clinical validation keys of one hospital's final evaluation (see fedheart.clinical): as the hospital
    computed them, else derived here from its score histograms; with its warnings and the adoption line."""
    if all(k in m for k in clinical.KEYS):
        got = dict(m)
    elif "hist-pos" in m:
        got = clinical.validation_from_histograms(m["hist-pos"], m["hist-neg"])
    else:
        got = dict.fromkeys(clinical.KEYS, math.nan)
    events = float(np.sum(m["hist-pos"])) if "hist-pos" in m else math.nan
    row: dict[str, Any] = {k: got[k] for k in clinical.KEYS if not k.startswith("auc-ci")}
    row |= {"auc-ci": _pair(got["auc-ci-low"], got["auc-ci-high"]),
            "events": round(events) if math.isfinite(events) else None,
            "warnings": clinical.warnings_for(float(m["num-examples"]), events) if math.isfinite(events) else []}
    if baseline is not None:
        local = _pair(baseline.get("local-auc-ci-low"), baseline.get("local-auc-ci-high"))
        row |= {"local-auc-ci": local, "local-brier": baseline.get("local-brier"),
                "local-calibration-slope": baseline.get("local-calibration-slope"),
                "adoption": clinical.adoption(row["auc-ci"], local if None not in local else None)}
    return row


def pooled_validation(final: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The clinical validation keys of the pooled test set, from the summed score histograms."""
    rows = [r for r in final.values() if "hist-pos" in r and has_test_rows(r)]
    if not rows:
        return {}
    pos, neg = np.sum([r["hist-pos"] for r in rows], axis=0), np.sum([r["hist-neg"] for r in rows], axis=0)
    out = clinical_row({"hist-pos": pos, "hist-neg": neg, "num-examples": float(pos.sum() + neg.sum())})
    return {"test-rows": round(float(pos.sum() + neg.sum())), "auc": auc_from_histograms(pos, neg), **out}


def _ci(pair: Any) -> str:
    return "n/a" if not pair or None in pair else f"({pair[0]:.3f}, {pair[1]:.3f})"


def clinical_table(rows: Mapping[str, Mapping[str, Any]], threshold: float = clinical.THRESHOLD) -> str:
    """Markdown: Brier, calibration, AUC with its interval and the rates at ``threshold``; warnings below."""
    lines = ["| hospital | test rows | events | Brier | cal. intercept | cal. slope | AUC (95% CI) | sens. | "
             "spec. | PPV | NPV | adopt (federated vs local-only) |", "|" + "---|" * 12]
    notes = []
    for name, r in rows.items():
        lines.append(f"| {name} | {_fmt(r.get('test-rows'))} | {_fmt(r.get('events'))} | {_fmt(r['brier'])} | "
                     f"{_fmt(r['calibration-intercept'], 2)} | {_fmt(r['calibration-slope'], 2)} | "
                     f"{_fmt(r.get('auc'))} {_ci(r['auc-ci'])} | {_fmt(r['sensitivity'])} | "
                     f"{_fmt(r['specificity'])} | {_fmt(r['ppv'])} | {_fmt(r['npv'])} | {r.get('adoption', '')} |")
        notes += [f"- **warning, {name.strip('*')}**: {w}" for w in r["warnings"]]
    return "\n".join([*lines, "", f"Sensitivity, specificity, PPV and NPV at the threshold {threshold:g}.", *notes])


def summary_table(final: Mapping[str, Mapping[str, Any]], baselines: Mapping[str, Mapping[str, Any]],
                  train_sizes: Mapping[str, int], external: Mapping[str, Mapping[str, Any]] | None = None,
                  ) -> tuple[str, dict[str, Any]]:
    """Markdown tables of final per-hospital metrics beside majority and local-only baselines, and of the
    clinical validation; ``external``: held-out hospitals (``data.holdout``), reported apart."""
    fed = federation_metrics(final)
    header = ("| hospital | train rows | test rows | accuracy | AUC | majority acc. | "
              "local-only acc. | local-only AUC |")
    lines = [header, "|" + "---|" * 8]
    data: dict[str, Any] = {"hospitals": {}, "federation": fed}
    empty = [name for name, m in final.items() if not has_test_rows(m)]
    for name, m in final.items():
        b = baselines.get(name, {})
        row = {"train-rows": train_sizes.get(name), "test-rows": int(m["num-examples"]),
               "accuracy": m["accuracy"], "auc": m["auc"], "loss": m["loss"],
               "majority-accuracy": b.get("majority-accuracy"), "local-accuracy": b.get("local-accuracy"),
               "local-auc": b.get("local-auc")}
        if name in empty:  # nothing to validate: no numbers, no warnings, a note
            row |= {k: None for k in ("accuracy", "auc", "loss")}
            row |= dict.fromkeys(k for k in clinical.KEYS if not k.startswith("auc-ci")) | {
                "auc-ci": [None, None], "events": 0, "warnings": [], "adoption": "no internal test rows",
                "note": NO_TEST_ROWS}
        else:
            row |= clinical_row(m, b)
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
    lines.append(f"| **pooled test set** | | {int(fed.get('num-examples', 0))} | | {_fmt(fed.get('pooled-auc'))} "
                 "| | | |")
    if empty:
        data["without-test-rows"] = empty
        lines += ["", f"{', '.join(empty)}: {NO_TEST_ROWS.replace('it trains', 'each trains')}; not in the means "
                  "or the pooled test set."]
    data["pooled"] = pooled_validation(final)
    data["threshold"] = clinical.THRESHOLD
    table = {**{n: r for n, r in data["hospitals"].items() if n not in empty},
             **({"**pooled test set**": data["pooled"]} if data["pooled"] else {})}
    text = "\n".join(lines) + "\n\n## Clinical validation\n\n" + (
        clinical_table(table) if table else "No hospital has internal test rows.")
    if external:
        data["external"] = {
            name: {"test-rows": int(m["num-examples"]), "rows": "all", "accuracy": m["accuracy"], "auc": m["auc"],
                   "loss": m["loss"], "local-auc": baselines.get(name, {}).get("local-auc"),
                   **clinical_row(m, baselines.get(name, {}))}
            for name, m in external.items()}
        text += ("\n\n## External validation (held out: no statistics, no training; all its rows)\n\n"
                 + clinical_table(data["external"]))
    return text, data
