"""What one hospital does for each message: read its own file, compute, reply with weights and
aggregate numbers only. :mod:`client_app.app` imports this module on the first message (it holds the
torch, pandas and scikit-learn imports)."""

from __future__ import annotations

import os
from typing import Any

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from client_app.privacy import load_ledger, save_ledger
from fedheart.hospital import (
    HospitalData,
    evaluate_round,
    load_hospital,
    local_only_baseline,
    majority_baseline,
    train_round,
)
from fedheart.preprocess import Preprocessor
from fedheart.protocol import parse_model, parse_privacy, parse_train
from fedheart.schema import hospital
from fedheart.sources import hospital_file, partition_file
from fedheart.stats import GlobalStats
from fedheart.tracking import track_hospital

if "OMP_NUM_THREADS" not in os.environ:  # Ray sets it to 1 in simulation; a SuperNode's ClientApp does not
    # Tiny models: with 2 intra-op threads on 2 shared cores one SGD step took ~15x longer (bench/results/perf).
    torch.set_num_threads(1)


def _hospital(context: Context, config: dict[str, Any]) -> HospitalData:
    """This node's data: ``data-path`` from --node-config, else the simulation partition."""
    node = context.node_config
    if "data-path" in node:
        path, name = str(node["data-path"]), str(node.get("hospital", "")) or None
    elif config.get("partition-dir"):  # data.partition_dir: the i-th file of a folder (e.g. synthetic)
        file = partition_file(str(config["partition-dir"]), int(node["partition-id"]))
        path, name = str(file), file.stem
    else:
        keys = str(config["hospitals"]).split(",")
        pid = int(node["partition-id"])
        if pid >= len(keys):
            raise ValueError(f"partition {pid} has no hospital: data.hospitals lists only {keys}")
        h = hospital(keys[pid])
        path = str(hospital_file(h, str(config["data-root"]) or None,
                                 allow_download=bool(config["data-download"]),
                                 base_url=str(config["data-url"])))
        name = h.key if keys.count(h.key) == 1 else f"{h.key}-{pid}"  # a listed-twice file: own name
    return load_hospital(path, seed=int(config["split-seed"]), pipeline=str(config["pipeline"]),
                         train_fraction=float(config["train-fraction"]), name=name)


def _setup(msg: Message, context: Context) -> tuple[HospitalData, Preprocessor, dict[str, Any]]:
    config = dict(msg.content["config"])
    data = _hospital(context, config)
    stats = str(config.get("preprocessing", ""))
    return data, data.preprocessor(GlobalStats.from_json(stats) if stats else None), config


def _weights(msg: Message) -> dict:
    return {k: v.numpy() for k, v in msg.content["arrays"].items()}


def _track(context: Context, config: dict[str, Any], data: HospitalData, phase: str, metrics: dict) -> None:
    """Log this reply's numbers to the hospital's tracking run; a failure is reported once per run."""
    state = context.state.config_records.get("tracking")  # kept by the SuperNode across messages
    known = str(state["error"]) if state and "error" in state else None
    error = track_hospital(config, data.name, len(data.y_train), phase, metrics, error=known)
    if error and error != known:
        context.state["tracking"] = ConfigRecord({"error": error})


def _info(data: HospitalData) -> ConfigRecord:
    """The hospital's name: lets the server recognise a SuperNode that rejoined with a new node id."""
    return ConfigRecord({"hospital": data.name})


def statistics(msg: Message, context: Context) -> Message:
    """Sufficient statistics of the training rows (counts, sums, sums of squares, category counts)."""
    config = dict(msg.content["config"])
    data = _hospital(context, config)
    dp = parse_privacy(config)  # DP-SGD: a Gaussian release, recorded in the hospital's ledger
    ledger = load_ledger(context) if dp else None
    stats = data.statistics(dp, ledger)
    if ledger is not None:
        save_ledger(context, ledger)
    content = RecordDict({"stats": MetricRecord(stats),
                          "info": _info(data)})
    return Message(content, reply_to=msg)


def train(msg: Message, context: Context) -> Message:
    """One round of local training from the global model (DP-SGD when privacy.mode is dp-sgd)."""
    data, pre, config = _setup(msg, context)
    dp = parse_privacy(config)
    ledger = load_ledger(context) if dp else None  # cumulative privacy accounting across rounds
    weights, metrics = train_round(data, pre, _weights(msg), parse_model(config), parse_train(config),
                                   seed=int(config["seed"]),
                                   server_round=int(config["server-round"]), dp=dp, ledger=ledger)
    if ledger is not None:
        save_ledger(context, ledger)
    _track(context, config, data, "train", metrics)
    arrays = ArrayRecord({k: Array(v) for k, v in weights.items()})
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics), "info": _info(data)})
    return Message(content, reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    """Loss, ROC AUC, accuracy and score histograms of the global model on the test rows."""
    data, pre, config = _setup(msg, context)
    metrics = evaluate_round(data, pre, _weights(msg), parse_model(config))
    _track(context, config, data, "evaluate", metrics)
    return Message(RecordDict({"metrics": MetricRecord(metrics), "info": _info(data)}), reply_to=msg)


def baseline(msg: Message, context: Context) -> Message:
    """Majority-class and local-only baselines on this hospital's own data."""
    if parse_privacy(dict(msg.content["config"])) is not None:  # DP-SGD: they would release training rows
        return Message(RecordDict({"metrics": MetricRecord({})}), reply_to=msg)  # outside the budget
    data, pre, config = _setup(msg, context)
    metrics = majority_baseline(data)
    if config.get("baseline.local-only", True):
        metrics |= local_only_baseline(data, pre, _weights(msg), parse_model(config), parse_train(config),
                                       rounds=int(config["baseline.rounds"]), seed=int(config["seed"]))
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
