"""Experiment tracking behind one small interface: ``local`` (the run's files) or ``sagemaker``.

The server decides the experiment name once per run and sends it, with the backend settings, in
every message (:func:`tracking_settings`); each hospital logs to its own run from its ClientApp
(:func:`track_hospital`) and the aggregator to its run from the ServerApp (:func:`aggregator_tracker`).
A failing backend never stops training: it is reported once and switched off (:class:`SafeTracker`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedheart.tracking.base import NullTracker, SafeTracker, Tracker, TrackingError
from fedheart.tracking.content import (
    aggregator_metrics,
    aggregator_params,
    hospital_eval_metrics,
    hospital_params,
    hospital_train_metrics,
    run_params,
)
from fedheart.tracking.local import LocalTracker
from fedheart.tracking.names import AGGREGATOR, experiment_name, hospital_run_name

if TYPE_CHECKING:
    from fedheart.config_schema import AppConfig

__all__ = ["BACKENDS", "NullTracker", "SafeTracker", "Tracker", "TrackingError", "aggregator_metrics",
           "aggregator_params", "aggregator_tracker", "experiment_for_run", "make_tracker", "track_hospital",
           "tracking_settings"]

BACKENDS = ("local", "sagemaker")
TRACKING_FILE = "tracking.json"
_KEYS = ("backend", "experiment", "region", "timeout", "max-attempts", "params")


def make_tracker(backend: str, experiment: str, run_name: str, *, label: str, region: str | None = None,
                 timeout: float = 5.0, max_attempts: int = 2, flush_every: int = 0) -> Tracker:
    """The tracker of one run; any backend other than ``local`` is wrapped in a SafeTracker."""
    if backend == "local":
        return LocalTracker()
    if backend == "sagemaker":
        from fedheart.tracking.sagemaker import SageMakerTracker

        return SafeTracker(lambda: SageMakerTracker(experiment, run_name, region=region, timeout=timeout,
                                                    max_attempts=max_attempts, flush_every=flush_every),
                           label=f"{label} (sagemaker experiment {experiment!r}, run {run_name!r})")
    raise ValueError(f"unknown tracking backend {backend!r}; known: {', '.join(BACKENDS)}")


def experiment_for_run(run_dir: Path, prefix: str, run_id: int) -> str:
    """The run's experiment name: kept in ``tracking.json`` so a resumed run logs to the same one."""
    from fedheart.runs import write_json

    path = run_dir / TRACKING_FILE
    if path.is_file():
        return str(json.loads(path.read_text(encoding="utf-8"))["experiment"])
    name = experiment_name(prefix, run_id, datetime.now(UTC))
    write_json(path, {"experiment": name, "run_id": int(run_id)})
    return name


def tracking_settings(cfg: AppConfig, experiment: str) -> dict[str, str | int | float]:
    """What a hospital needs to log to its own run (sent with every message)."""
    t = cfg.tracking
    values = (t.backend, experiment, t.region or "", float(t.timeout), int(t.max_attempts),
              json.dumps(run_params(cfg), sort_keys=True))
    return {f"tracking.{k}": v for k, v in zip(_KEYS, values, strict=True)}


def aggregator_tracker(cfg: AppConfig, experiment: str) -> Tracker:
    t = cfg.tracking
    return make_tracker(t.backend, experiment, AGGREGATOR, label="the aggregator", region=t.region,
                        timeout=t.timeout, max_attempts=t.max_attempts, flush_every=t.flush_every)


@functools.lru_cache(maxsize=16)
def _hospital_tracker(backend: str, experiment: str, hospital: str, region: str, timeout: float,
                      max_attempts: int) -> Tracker:
    """One tracker per hospital run and process: the SDK run is reused by later messages."""
    return make_tracker(backend, experiment, hospital_run_name(hospital), label=f"hospital {hospital}",
                        region=region or None, timeout=timeout, max_attempts=max_attempts)


def track_hospital(config: Mapping[str, Any], hospital: str, train_rows: int, phase: str,
                   metrics: Mapping[str, Any], error: str | None = None) -> str | None:
    """Log a hospital's train or evaluate reply (step = round) and send it before the reply goes.

    ``error`` says tracking already failed for this hospital in this run (the caller keeps it across
    messages, which may run in fresh processes): then nothing is tried and nothing reported again.
    Returns the error that switched tracking off, if any.
    """
    backend = str(config.get("tracking.backend", "local"))
    if backend == "local" or error:
        return error
    tracker = _hospital_tracker(backend, str(config.get("tracking.experiment", "")), hospital,
                                str(config.get("tracking.region", "")), float(config.get("tracking.timeout", 5.0)),
                                int(config.get("tracking.max-attempts", 2)))
    step = int(config["server-round"])
    if phase == "train":
        import torch

        shared = json.loads(str(config.get("tracking.params", "{}")))
        tracker.log_params(hospital_params(shared, hospital, train_rows, str(torch.get_default_device())))
        tracker.log_metrics(hospital_train_metrics(metrics), step)
    else:
        tracker.log_metrics(hospital_eval_metrics(metrics), step)
    tracker.flush()
    return getattr(tracker, "error", None)
