"""The tracker interface: a tracker that fails warns once and stays off, the backends by name, and the
aggregator's metric names. The SageMaker backend: test_tracking_sagemaker.py."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from fedheart.tracking import NullTracker, SafeTracker, Tracker, aggregator_metrics, make_tracker
from fedheart.tracking.local import LocalTracker

EXPERIMENT = "fed-heart-disease-20261125-010203-0000000042"


class Exploding(Tracker):
    def __init__(self) -> None:
        self.calls = 0

    def log_params(self, params: Any) -> None:
        self.calls += 1
        raise ConnectionError("endpoint unreachable")

    def log_metrics(self, metrics: Any, step: int) -> None:
        self.calls += 1
        raise ConnectionError("endpoint unreachable")


# -- interface and failure handling -------------------------------------------------------------
def test_safe_tracker_warns_once_then_stays_off(caplog: pytest.LogCaptureFixture) -> None:
    inner = Exploding()
    tracker = SafeTracker(lambda: inner, "hospital x")
    with caplog.at_level(logging.WARNING, logger="fedheart.tracking"):
        tracker.log_params({"a": 1})
        for step in range(1, 6):
            tracker.log_metrics({"m": 1.0}, step)
        tracker.close()
    assert inner.calls == 1
    assert tracker.error == "ConnectionError: endpoint unreachable"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Experiment tracking is off for hospital x: ConnectionError: endpoint unreachable" in warnings[0].message
    assert warnings[0].exc_info is None  # no traceback


def test_safe_tracker_catches_factory_errors_and_respects_a_known_error(caplog: pytest.LogCaptureFixture) -> None:
    def factory() -> Tracker:
        raise ValueError("bad name")

    with caplog.at_level(logging.WARNING, logger="fedheart.tracking"):
        broken = SafeTracker(factory, "the aggregator")
        broken.log_metrics({"m": 1.0}, 1)
        broken.flush()
        built: list[int] = []
        known = SafeTracker(lambda: built.append(1) or NullTracker(), "hospital y", error="earlier failure")
        known.log_metrics({"m": 1.0}, 1)
    assert broken.error == "ValueError: bad name"
    assert built == []
    assert len(caplog.records) == 1


def test_make_tracker_backends() -> None:
    assert isinstance(make_tracker("local", EXPERIMENT, "aggregator", label="x"), LocalTracker)
    assert isinstance(make_tracker("sagemaker", EXPERIMENT, "aggregator", label="x"), SafeTracker)
    with pytest.raises(ValueError, match="unknown tracking backend 'mlflow'"):
        make_tracker("mlflow", EXPERIMENT, "aggregator", label="x")


def test_aggregator_metrics_names() -> None:
    fed = {"pooled-auc": 0.85, "loss": 0.45, "mean-accuracy": 0.8, "mean-auc": 0.83, "train-loss": 0.5,
           "seconds": 3.0}
    rows = [{"epsilon": 0.9}, {"epsilon": 1.2}, {"train-loss": 0.4}]
    assert aggregator_metrics(fed, rows) == {"Test:AUC": 0.85, "Test:Loss": 0.45, "Test:Accuracy": 0.8,
                                             "Test:MeanAUC": 0.83, "Training:Loss": 0.5, "Privacy:Epsilon": 1.2}
    assert aggregator_metrics(fed | {"epsilon": 2.5}, rows)["Privacy:Epsilon"] == 2.5  # the server's accountant
    assert "Privacy:Epsilon" not in aggregator_metrics(fed, [{"train-loss": 0.4}])
