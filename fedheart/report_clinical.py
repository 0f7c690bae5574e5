"""The clinical validation part of report.html: the reliability diagram, the table of Brier score,
calibration, AUC with its 95 % interval and the rates at the threshold, the adoption lines, and a
visible warning for each hospital with too few events or test rows (keys of summary.json, see
:func:`fedheart.summary.clinical_row`)."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fedheart.clinical import MIN_EVENTS, MIN_TEST_ROWS, THRESHOLD, reliability
from fedheart.colours import FEDERATION, colour, ordered

POOLED = "pooled test set"
STYLE = (".clinical-warning{background:#fff3cd;border-left:6px solid #d55e00;padding:6px 12px;margin:6px 0}"
         " td.adoption{text-align:left}")


def plot_reliability(final: Mapping[str, Mapping[str, Any]], path: Path, external: tuple[str, ...] = ()) -> Path:
    """Observed share of positives against the mean predicted probability, in ten equal ranges of the
    prediction, per hospital (marker area: rows) and for the pooled test set (without ``external``)."""
    fig = Figure(figsize=(6.0, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    curves = {n: (final[n]["hist-pos"], final[n]["hist-neg"]) for n in ordered(final)
              if "hist-pos" in final[n] and sum(final[n]["hist-pos"]) + sum(final[n]["hist-neg"]) > 0}
    internal = [c for n, c in curves.items() if n not in external]
    if internal:
        curves[POOLED] = (np.sum([p for p, _ in internal], axis=0), np.sum([q for _, q in internal], axis=0))
    for name, (pos, neg) in curves.items():
        points = reliability(pos, neg)
        pooled = name == POOLED
        label = f"{name} (external)" if name in external else name
        ax.plot(points["predicted"], points["observed"], "--" if pooled else "-", color=FEDERATION if pooled
                else colour(name), marker="s" if pooled else "o", markersize=0, label=label)
        ax.scatter(points["predicted"], points["observed"], s=np.sqrt(points["rows"]) * 8,
                   color=FEDERATION if pooled else colour(name), alpha=0.7)
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    ax.set(title="Reliability of the final model", xlabel="mean predicted probability",
           ylabel="observed share with disease", xlim=(0, 1), ylim=(-0.02, 1.02))
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize="small", loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def _ci(pair: Any) -> str:
    return "n/a" if not pair or None in pair else f"{pair[0]:.3f}&ndash;{pair[1]:.3f}"


def _rows_html(rows: Mapping[str, Mapping[str, Any]]) -> str:
    head = ("<tr><th></th><th>test rows</th><th>events</th><th>Brier</th><th>cal. intercept</th><th>cal. slope</th>"
            "<th>AUC</th><th>AUC 95% CI</th><th>sensitivity</th><th>specificity</th><th>PPV</th><th>NPV</th>"
            "<th>adopt the federated model?</th></tr>")
    body = []
    for name, r in rows.items():
        cells = [_num(r.get("test-rows"), 0), _num(r.get("events"), 0), _num(r.get("brier")),
                 _num(r.get("calibration-intercept"), 2), _num(r.get("calibration-slope"), 2), _num(r.get("auc")),
                 _ci(r.get("auc-ci")), *(_num(r.get(k)) for k in ("sensitivity", "specificity", "ppv", "npv"))]
        body.append(f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{c}</td>" for c in cells)
                    + f'<td class="adoption">{html.escape(str(r.get("adoption", "")))}</td></tr>')
    return f"<table>{head}{''.join(body)}</table>"


def _warnings_html(rows: Mapping[str, Mapping[str, Any]]) -> str:
    return "".join(f'<div class="clinical-warning"><strong>Warning, {html.escape(name)}:</strong> '
                   f"{html.escape(w)}</div>" for name, r in rows.items() for w in r.get("warnings", []))


def clinical_html(summary: Mapping[str, Any], figure: str | None) -> str:
    """The report's clinical validation section from summary.json (and the reliability figure's path)."""
    hospitals = dict(summary.get("hospitals", {}))
    if not any("brier" in r for r in hospitals.values()):
        return ""
    notes = "".join(f"<p>{html.escape(name)}: {html.escape(str(r['note']))}.</p>"
                    for name, r in hospitals.items() if r.get("note"))
    rows = {**{n: r for n, r in hospitals.items() if not r.get("note")},
            **({POOLED: summary["pooled"]} if summary.get("pooled") else {})}
    threshold = summary.get("threshold", THRESHOLD)
    parts = [f"<style>{STYLE}</style><h2>Clinical validation</h2>",
             f"<p>Final model on each hospital's test rows and on the pooled test set (pooled numbers from the "
             f"summed score histograms). AUC interval: DeLong, 95%. Sensitivity, specificity, PPV and NPV at the "
             f"threshold {threshold:g}. Calibration: intercept 0 and slope 1 are perfect; a slope below 1 means "
             f"too extreme predictions. Warned: fewer than {MIN_EVENTS} events or {MIN_TEST_ROWS} test rows. "
             "Adoption: the federated model's AUC interval against the hospital's local-only model's.</p>",
             notes, _warnings_html(rows), _rows_html(rows) if rows else ""]
    external = summary.get("external") or {}
    if external:
        parts += ["<h2>External validation (held-out hospital)</h2>",
                  "<p>Joined only to evaluate (no statistics, no training), on all its rows; its local-only model "
                  "on its own test rows.</p>", _warnings_html(external), _rows_html(external)]
    if figure:
        parts.append(f'<p><img src="{figure}" alt="reliability"></p>')
    return "\n".join(parts)
