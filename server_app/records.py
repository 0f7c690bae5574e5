"""Translate between Flower records and the plain Python values of the core."""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedheart.summary import federation_metrics


def to_arrays(weights: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in weights.items()})


def from_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def config_record(values: dict[str, Any]) -> ConfigRecord:
    return ConfigRecord(dict(values))


def metrics_of(content: RecordDict) -> dict[str, Any]:
    """The (single) MetricRecord of a reply as a plain dict."""
    record = next(iter(content.metric_records.values()), MetricRecord())
    return dict(record)


def aggregate_evaluate_metrics(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """Federation metrics of an evaluate round: means over hospitals and the pooled-test AUC."""
    per_hospital = {str(i): metrics_of(r) for i, r in enumerate(records)}
    fed = federation_metrics(per_hospital)
    fed.pop("num-examples", None)
    return MetricRecord({k: float(v) for k, v in fed.items()})
