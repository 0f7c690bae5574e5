"""The finish phase: the final model files, the baselines, the summary, the report."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import ConfigRecord, RecordDict

from fedheart.onnx_export import write_run_onnx
from fedheart.report import write_report
from fedheart.runs import write_json, write_text
from fedheart.saved_model import model_meta
from fedheart.splits import FLAMBY_TRAIN_FRACTION
from fedheart.summary import summary_table
from fedheart.summary_personal import personal_summary
from server_app.records import metrics_of, to_arrays
from server_app.replies import error_reasons

if TYPE_CHECKING:
    from server_app.federation import Federation

log = logging.getLogger("fedheart.server")


def baselines(federation: Federation, train_cfg: ConfigRecord, names: Iterable[str]) -> dict[str, dict]:
    """Majority-class and local-only baselines, computed on its own data by each named hospital.

    Only the hospitals of the final evaluation are asked (the summary shows no others): with
    many clients and a sampled ``fraction_evaluate`` that keeps this phase as cheap as a round.
    With ``data.train_fraction=1.0`` (a ``data.holdout`` run) the training hospitals have no test rows
    to compare on: only the held-out hospital is asked, for a local-only model on its default split.
    """
    cfg = federation.cfg
    settings = {**dict(train_cfg), "baseline.rounds": cfg.rounds, "baseline.local-only": cfg.baselines}
    wanted = set(names)
    if cfg.data.train_fraction >= 1.0:
        wanted &= {h.name for h in federation.hospitals.values() if h.holdout}
        settings["train-fraction"] = FLAMBY_TRAIN_FRACTION  # a hospital policy's own fraction still wins
    content = RecordDict({"arrays": to_arrays(federation.initial), "config": ConfigRecord(settings)})
    nodes = [n for n, h in federation.hospitals.items() if h.name in wanted]
    replies = federation.send(nodes, "query.baseline", content) if nodes else []
    for reason in error_reasons(replies):
        log.warning("A hospital failed to compute its baselines: %s", reason)
    return {federation.name_of(r): metrics_of(r.content) for r in replies if not r.has_error()}


def finish(federation: Federation, final: dict[str, np.ndarray], per_hospital: dict[str, dict],
           train_cfg: ConfigRecord, seconds: float) -> None:
    """Write the final model (weights and ONNX), ask for the baselines, write the summary and report."""
    cfg, history, run_dir = federation.cfg, federation.history, federation.run_dir
    pre = federation.preprocessor()
    run_dir.save_final_model(final, model_meta(
        cfg.model, pre, preprocessing=None if cfg.data.pipeline == "project"
        else "per-hospital standardisation (FLamby): each hospital uses its own training mean/std",
        rounds=history.last_round, strategy=cfg.strategy.name))
    try:
        log.info("Portable model: %s", write_run_onnx(run_dir.path))
    except Exception as exc:  # the weights are saved: `fedheart export RUN_DIR` can write the file later
        log.warning("Could not write final_model.onnx: %s", exc)
    t0 = time.perf_counter()
    found = baselines(federation, train_cfg, per_hospital)
    history.phase_seconds["baselines"] = time.perf_counter() - t0
    internal = federation.internal(per_hospital)
    external = {n: m for n, m in per_hospital.items() if n not in internal}
    table, data = summary_table(internal, found, federation.train_rows(), external=external)
    if cfg.personalization.name != "none":
        text, personal = personal_summary(cfg.personalization.name, internal, found)
        table, data["personalization"] = f"{table}\n\n{text}", personal
    privacy = federation.privacy
    data.update({"rounds": history.last_round, "seconds": seconds, "strategy": cfg.strategy.name,
                 "protocol": cfg.protocol, "aggregation": cfg.aggregation.mode, "run_dir": str(run_dir.path),
                 "phase_seconds": history.phase_seconds, "privacy": privacy.summary(),
                 "stopped_reason": privacy.stopped_reason})
    write_json(run_dir.path / "summary.json", data)
    write_text(run_dir.path / "summary.md",
               f"# Run summary\n\nStrategy: {cfg.strategy.name}, protocol: {cfg.protocol}, "
               f"rounds: {history.last_round}\n\n{table}\n"
               + (f"\nStopped before round {history.last_round + 1}: {privacy.stopped_reason}\n"
                  if privacy.stopped_reason else ""))
    log.info("Final results after %d rounds (%.1fs), written to %s\n%s", history.last_round, seconds, run_dir.path,
             table)
    federation.tracker.close()
    try:
        log.info("Report: %s", write_report(run_dir.path, final=per_hospital))
    except Exception as exc:  # the results are saved; a plotting problem must not fail the run
        log.warning("Could not write the run report: %s", exc)
