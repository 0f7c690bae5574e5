"""The summary's personalisation section: per hospital, the global, the personal and the local-only model."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

KINDS = (("global", ""), ("personal", "personal-"), ("local-only", "local-"))


def _number(value: Any) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def personal_summary(method: str, final: Mapping[str, Mapping[str, Any]],
                     baselines: Mapping[str, Mapping[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Markdown and data: accuracy and AUC of each kind of model per hospital, and each one's mean over the
    hospitals that report it (a hospital reports its personal model after the last round; the local-only
    model is its baseline, which DP-SGD runs and policies without ``release.baselines`` do not compute)."""
    rows: dict[str, dict[str, float | None]] = {}
    for name, m in final.items():
        merged = {**baselines.get(name, {}), **m}
        rows[name] = {f"{kind}-{metric}": _number(merged.get(f"{prefix}{metric}"))
                      for kind, prefix in KINDS for metric in ("accuracy", "auc")}
    keys = [f"{kind}-{metric}" for kind, _ in KINDS for metric in ("accuracy", "auc")]
    means: dict[str, float | None] = {}
    for k in keys:
        values = [r[k] for r in rows.values() if r[k] is not None]
        means[k] = sum(values) / len(values) if values else None  # type: ignore[arg-type]
    lines = [f"## Personalisation ({method})\n",
             "| hospital | global acc. | personal acc. | local-only acc. | global AUC | personal AUC "
             "| local-only AUC |",
             "|" + "---|" * 7]
    for name, r in [*rows.items(), ("**mean over hospitals**", means)]:
        lines.append(f"| {name} | " + " | ".join(_fmt(r[f"{kind}-{metric}"]) for metric in ("accuracy", "auc")
                                                 for kind, _ in KINDS) + " |")
    return "\n".join(lines) + "\n", {"method": method, "hospitals": rows, "means": means}
