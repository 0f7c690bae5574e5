"""A run's report: PNG plots and an HTML page with the final table, built from the run folder.

Reads ``metrics.jsonl`` (per-round numbers), ``summary.json`` (final table with baselines) and
``final_eval.json`` (final per-hospital metrics with score histograms, for the ROC curves), and
writes ``report.html`` and ``report/*.png``. ``fedheart report RUN_DIR`` rebuilds it.
"""

from __future__ import annotations

import html
import json
import math
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fedheart.colours import FEDERATION, colour, ordered
from fedheart.histograms import auc_from_histograms, roc_from_histograms
from fedheart.report_clinical import clinical_html, plot_reliability
from fedheart.runs import METRICS, write_json, write_text

FINAL_EVAL = "final_eval.json"
REPORT = "report.html"
FIGURES = "report"


class ReportError(RuntimeError):
    """The folder holds no run to report on; the message names what is missing."""


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _rows(run_dir: Path) -> pd.DataFrame:
    path = run_dir / METRICS
    if not path.is_file():
        raise ReportError(f"{path} not found: {run_dir} is not a fedheart run folder (or no round finished)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return pd.DataFrame(rows)


def _figure(panels: int) -> tuple[Figure, list[Any]]:
    fig = Figure(figsize=(5.5 * panels, 4.2), layout="constrained")
    FigureCanvasAgg(fig)  # render with Agg, whatever backend the process uses
    return fig, [fig.add_subplot(1, panels, i + 1) for i in range(panels)]


def _per_round(ax: Any, frame: pd.DataFrame, column: str, title: str, overall: pd.DataFrame | None = None,
               overall_column: str = "", overall_label: str = "") -> None:
    if column in frame:  # one colour per hospital, in one order, whatever order the replies came in
        for hospital in ordered(frame["hospital"].astype(str)):
            part = frame[frame["hospital"].astype(str) == hospital].sort_values("round")
            ax.plot(part["round"], part[column], marker="o", label=hospital, color=colour(hospital))
    if overall is not None and overall_column in overall:
        part = overall.sort_values("round")
        ax.plot(part["round"], part[overall_column], "--", color=FEDERATION, marker="s", label=overall_label)
    ax.set_title(title)
    ax.set_xlabel("round")
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend(fontsize="small")
        ax.xaxis.get_major_locator().set_params(integer=True)


def _phase(rows: pd.DataFrame, phase: str) -> pd.DataFrame:
    return rows[rows["phase"] == phase] if "phase" in rows else pd.DataFrame()


def plot_rounds(rows: pd.DataFrame, out: Path) -> list[Path]:
    """Loss, AUC/accuracy (and epsilon with DP) per hospital per round."""
    train, evaluate, fed = (_phase(rows, p) for p in ("train", "evaluate", "federation"))
    paths = []
    fig, (a, b) = _figure(2)
    _per_round(a, train, "train-loss", "Training loss (local, per round)")
    _per_round(b, evaluate, "loss", "Test loss of the global model", fed, "loss", "all (example-weighted)")
    paths.append(_save(fig, out / "loss.png"))
    fig, (a, b) = _figure(2)
    _per_round(a, evaluate, "auc", "Test ROC AUC of the global model", fed, "pooled-auc", "pooled test set")
    _per_round(b, evaluate, "accuracy", "Test accuracy of the global model", fed, "mean-accuracy",
               "mean over hospitals")
    paths.append(_save(fig, out / "auc.png"))
    if any("epsilon" in f and f["epsilon"].notna().any() for f in (train, fed)):
        fig, (a,) = _figure(1)
        _per_round(a, train, "epsilon", "Privacy spent (epsilon, cumulative)", fed, "epsilon", "federation")
        paths.append(_save(fig, out / "epsilon.png"))
    return paths


def scored(final: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[list, list]]:
    """Score histograms by hospital, in the report's order, of the hospitals that had test rows."""
    return {name: (final[name]["hist-pos"], final[name]["hist-neg"]) for name in ordered(final)
            if "hist-pos" in final[name] and sum(final[name]["hist-pos"]) + sum(final[name]["hist-neg"]) > 0}


def plot_roc(final: Mapping[str, Mapping[str, Any]], out: Path, external: tuple[str, ...] = ()) -> Path:
    """Final ROC curves per hospital and of the pooled test set (without ``external``), from the score
    histograms."""
    fig, (ax,) = _figure(1)
    curves = scored(final)
    internal = [c for n, c in curves.items() if n not in external]
    if internal:
        curves["pooled test set"] = (np.sum([p for p, _ in internal], axis=0),
                                     np.sum([n for _, n in internal], axis=0))
    for name, (pos, neg) in curves.items():
        fpr, tpr = roc_from_histograms(pos, neg)
        style = {"color": FEDERATION, "linestyle": "--"} if name == "pooled test set" else {"color": colour(name)}
        label = f"{name} (external)" if name in external else name
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc_from_histograms(pos, neg):.3f})", **style)
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    ax.set(title="ROC of the final model", xlabel="false-positive rate", ylabel="true-positive rate",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    return _save(fig, out / "roc.png")


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _cell(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals; "n/a" for a missing one; "" for a cell that does not apply."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"


def _table(rows: Mapping[Any, Mapping[str, Any]], columns: Mapping[str, str], counts: tuple[str, ...] = ()) -> str:
    """HTML table of ``rows`` (label -> values by key); ``columns`` maps keys to headers."""
    cells = {label: [_cell(values.get(k), 0 if k in counts else 3) for k in columns] for label, values in rows.items()}
    return pd.DataFrame.from_dict(cells, orient="index", columns=list(columns.values())).to_html(border=0)


def _final_table(summary: Mapping[str, Any]) -> str:
    columns = {"train-rows": "train rows", "test-rows": "test rows", "accuracy": "accuracy", "auc": "AUC",
               "loss": "loss", "majority-accuracy": "majority acc.", "local-accuracy": "local-only acc.",
               "local-auc": "local-only AUC"}
    blank = dict.fromkeys(columns, "")
    fed = summary.get("federation", {})
    rows = {**summary.get("hospitals", {}),
            "mean over hospitals": blank | {k: v for k, v in summary.get("means", {}).items() if k in columns},
            "pooled test set": blank | {"test-rows": fed.get("num-examples"), "auc": fed.get("pooled-auc"),
                                        "loss": fed.get("loss")}}
    return _table(rows, columns, counts=("train-rows", "test-rows"))


def _rounds_table(rows: pd.DataFrame) -> str:
    columns = {"train-loss": "train loss", "loss": "test loss", "mean-accuracy": "mean accuracy",
               "mean-auc": "mean AUC", "pooled-auc": "pooled AUC", "seconds": "seconds"}
    fed = _phase(rows, "federation")
    if fed.empty:
        return "<p>No round finished.</p>"
    by_round = {f"round {int(r['round'])}": r for r in fed.to_dict("records")}
    return _table(by_round, columns, counts=("seconds",))


def _facts(run_dir: Path, summary: Mapping[str, Any] | None) -> dict[str, str]:
    from omegaconf import OmegaConf

    config = run_dir / "config.yaml"
    cfg = OmegaConf.load(config) if config.is_file() else OmegaConf.create()

    def setting(key: str) -> str:
        return str(OmegaConf.select(cfg, key, default="n/a"))

    facts = {"run folder": str(run_dir)}
    if summary:
        facts |= {"strategy": str(summary.get("strategy")), "protocol": str(summary.get("protocol")),
                  "rounds": str(summary.get("rounds")), "duration": f"{float(summary.get('seconds', 0)):.0f} s"}
    else:
        facts |= {"strategy": setting("strategy.name"), "rounds configured": setting("rounds"),
                  "status": "no summary.json: the run did not finish"}
    facts |= {"model": setting("model.name"), "privacy": setting("privacy.mode"),
              "tracking": setting("tracking.backend")}
    tracking = _read_json(run_dir / "tracking.json")
    if tracking and facts["tracking"] not in ("local", "n/a"):
        facts["experiment"] = str(tracking.get("experiment"))
    return facts


def write_report(run_dir: str | Path, final: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Write ``report.html`` and its plots; ``final`` (the last evaluation) is saved first if given."""
    run_dir = Path(run_dir).expanduser().resolve()
    if final is not None:
        write_json(run_dir / FINAL_EVAL, final)
    rows = _rows(run_dir)
    summary = _read_json(run_dir / "summary.json")
    final = final if final is not None else _read_json(run_dir / FINAL_EVAL)
    figures = plot_rounds(rows, run_dir / FIGURES) if not rows.empty else []
    held = tuple((summary or {}).get("external") or ())  # data.holdout: not part of the pooled test set
    if final:
        figures.append(plot_roc(final, run_dir / FIGURES, held))
    reliability = plot_reliability(final, run_dir / FIGURES / "reliability.png", held) if final else None
    facts = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                    for k, v in _facts(run_dir, summary).items())
    images = "".join(f'<p><img src="{FIGURES}/{p.name}" alt="{p.stem}"></p>' for p in figures)
    final_html = _final_table(summary) if summary else "<p>No final results: the run did not finish.</p>"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>fedheart run {html.escape(run_dir.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse;margin:1em 0}}
th,td{{padding:3px 10px;text-align:right;border-bottom:1px solid #ddd}} img{{max-width:100%}}</style></head>
<body><h1>Run {html.escape(run_dir.name)}</h1>
<table>{facts}</table>
<h2>Final results per hospital</h2>
<p>Global model on each hospital's test rows, beside the majority-class and local-only baselines.</p>
{final_html}
{clinical_html(summary, f"{FIGURES}/{reliability.name}" if reliability else None) if summary else ""}
<h2>Per round</h2>
{images}
{_rounds_table(rows) if not rows.empty else ""}
<p><small>Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} by <code>fedheart report</code>.</small></p>
</body></html>
"""
    path = run_dir / REPORT
    write_text(path, page)
    return path


def run_report(run_dir: str | Path) -> int:
    """``fedheart report RUN_DIR``: rebuild the report; 0 on success, 1 with a message otherwise."""
    path = Path(run_dir)
    if not path.is_dir():
        print(f"error: {path} is not a folder (give a run's output folder)", file=sys.stderr)
        return 1
    try:
        report = write_report(path)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"report written to {report}")
    return 0
