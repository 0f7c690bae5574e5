"""What one hospital does for each message: read its own file, compute, reply with weights and
aggregate numbers only. :mod:`client_app.app` imports this module on the first message (it holds the
torch, pandas and scikit-learn imports)."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from client_app import personal
from client_app.gate import Session, Where, handle
from fedheart.hospital import (
    HospitalData,
    evaluate_round,
    load_hospital,
    local_only_baseline,
    majority_baseline,
    train_round,
)
from fedheart.personal import PersonalSettings
from fedheart.personal.methods import planned_steps, train_personal
from fedheart.preprocess import Preprocessor
from fedheart.privacy.eval_dp import noisy_evaluation
from fedheart.protocol import parse_model, parse_privacy, parse_train
from fedheart.safeguard.policy import DEFAULT_DELTA, Refused
from fedheart.safeguard.scrub import HospitalFailure
from fedheart.schema import hospital
from fedheart.sources import DataNotFoundError, hospital_file, partition_file
from fedheart.stats import GlobalStats
from fedheart.tracking import track_hospital
from fedheart.training import EvalResult

if TYPE_CHECKING:
    from fedheart.privacy.dpsgd import DPSettings

log = logging.getLogger("fedheart.hospital")

if "OMP_NUM_THREADS" not in os.environ:  # Ray sets it to 1 in simulation; a SuperNode's ClientApp does not
    # Tiny models: with 2 intra-op threads on 2 shared cores one SGD step took ~15x longer (bench/results/perf).
    torch.set_num_threads(1)


def _where(context: Context, config: dict[str, Any]) -> Where:
    """This node's data file: ``data-path`` from --node-config, else the simulation partition."""
    node = context.node_config
    if "data-path" in node:
        path = str(node["data-path"])
        return Where(path, str(node.get("hospital", "")) or Path(path).stem)
    if config.get("partition-dir"):  # data.partition_dir: the i-th file of a folder (e.g. synthetic)
        file = partition_file(str(config["partition-dir"]), int(node["partition-id"]))
        return Where(str(file), file.stem)
    keys = str(config["hospitals"]).split(",")
    pid = int(node["partition-id"])
    if pid >= len(keys):
        raise DataNotFoundError(f"partition {pid} has no hospital: data.hospitals lists only {keys}")
    h = hospital(keys[pid])
    path = str(hospital_file(h, str(config["data-root"]) or None, allow_download=bool(config["data-download"]),
                             base_url=str(config["data-url"])))
    name = h.key if keys.count(h.key) == 1 else f"{h.key}-{pid}"  # a listed-twice file: own name
    return Where(path, name, key=h.key)


def _data(s: Session) -> HospitalData:
    return load_hospital(s.where.path, seed=int(s.config["split-seed"]), pipeline=str(s.config["pipeline"]),
                         train_fraction=float(s.config["train-fraction"]), name=s.where.name)


def _setup(s: Session) -> tuple[HospitalData, Preprocessor]:
    data = _data(s)
    stats = str(s.config.get("preprocessing", ""))
    return data, data.preprocessor(GlobalStats.from_json(stats) if stats else None)


def _held_out(s: Session) -> bool:
    """This hospital is the run's ``data.holdout``: it only evaluates (no statistics, no training)."""
    return bool(s.config.get("holdout")) and str(s.config["holdout"]) == s.where.name


def _weights(msg: Message) -> dict:
    return {k: v.numpy() for k, v in msg.content["arrays"].items()}


def _track(s: Session, data: HospitalData, phase: str, metrics: dict) -> None:
    """Log this reply's numbers to the hospital's tracking run; a failure is reported once per run."""
    context = s.context
    state = context.state.config_records.get("tracking")  # kept by the SuperNode across messages
    known = str(state["error"]) if state and "error" in state else None
    rows = round(s.run.public_rows) if s.run is not None and s.run.public_rows is not None else len(data.y_train)
    error = track_hospital(s.config, data.name, rows, phase, metrics, error=known)
    if error and error != known:
        context.state["tracking"] = ConfigRecord({"error": error})


def _info(data: HospitalData) -> ConfigRecord:
    """The hospital's name: lets the server recognise a SuperNode that rejoined with a new node id."""
    return ConfigRecord({"hospital": data.name})


def _dp(s: Session) -> DPSettings | None:
    """DP-SGD settings of the accepted request; under a policy, its noise floor and the run's reservation."""
    dp = parse_privacy(s.config)
    if dp is None or s.run is None:
        return dp
    if s.policy is None:  # a state folder without a policy: the server's settings, kept on disk
        s.run.delta = s.run.delta or dp.delta or DEFAULT_DELTA
        return dp
    run, policy = s.run, s.policy
    if not run.reserved:
        s.book.reserve(run, float(dp.epsilon or policy.max_epsilon_per_run), policy.delta,  # type: ignore[union-attr]
                       policy.lifetime_epsilon)
    evaluations = max(policy.max_evaluations_per_run - run.evaluations, 0) if policy.evaluation == "dp" else 0
    reserved = ((policy.evaluation_noise_multiplier, 1.0, evaluations),) if evaluations else ()
    return replace(dp, epsilon=min(float(dp.epsilon or run.reserved), run.reserved), delta=run.delta,
                   min_noise_multiplier=policy.min_noise_multiplier, reserved=reserved)


def statistics(msg: Message, context: Context) -> Message:
    """Sufficient statistics of the training rows (counts, sums, sums of squares, category counts)."""
    return handle("query.stats", msg, context, _where, _statistics)


def _statistics(s: Session) -> RecordDict:
    data = _data(s)
    if _held_out(s):  # its name only: the server learns which node it is, and nothing of its rows
        return RecordDict({"info": _info(data)})
    dp = _dp(s)
    if s.run is not None and s.policy is not None:
        if s.run.statistics:
            raise Refused("statistics", f"a second statistics release in run {s.run.run_id}", "once per run")
        s.run.statistics = True
    ledger = s.ledger() if dp else None  # DP-SGD: a Gaussian release, recorded in the hospital's ledger
    if dp is not None and ledger is not None and s.run is not None and s.policy is not None \
            and ledger.would_exceed((dp.stats_noise_multiplier, 1.0, 1), s.run.delta, s.run.reserved):
        raise Refused("privacy.max-epsilon-per-run", f"statistics at noise {dp.stats_noise_multiplier:g}",
                      f"{s.run.reserved:g} for this run")
    stats = data.statistics(dp, ledger, count=s.policy is not None)
    if ledger is not None:
        s.keep(ledger)
        if s.run is not None and s.policy is not None:
            s.run.public_rows = float(stats["n"])
    return RecordDict({"stats": MetricRecord(stats), "info": _info(data)})


def train(msg: Message, context: Context) -> Message:
    """One round of local training from the global model (DP-SGD when privacy.mode is dp-sgd)."""
    return handle("train", msg, context, _where, _train)


def _train(s: Session) -> RecordDict:
    if _held_out(s):
        raise HospitalFailure(f"hospital {s.where.name} is this run's data.holdout: it evaluates only, never trains")
    data, pre = _setup(s)
    dp = _dp(s)
    public_rows = None
    if dp is not None and s.policy is not None:
        public_rows = s.run.public_rows if s.run is not None else None
        if public_rows is None:
            raise Refused("statistics", "training before this run's statistics release", "statistics first")
    ledger = s.ledger() if dp else None  # cumulative privacy accounting across rounds
    settings, tcfg = PersonalSettings.from_config(s.config), parse_train(s.config)
    server_round = int(s.config["server-round"])
    if dp is not None and settings.active:  # personal DP-SGD steps are planned into the same budget
        rows = round(public_rows) if public_rows is not None else len(data.y_train)
        dp = replace(dp, extra_steps=planned_steps(settings, tcfg, rows, dp.rounds - server_round + 1))
    common = {"seed": int(s.config["seed"]), "server_round": server_round, "dp": dp, "ledger": ledger,
              "public_rows": public_rows}
    if settings.active:
        weights, metrics, own = train_personal(settings, data, pre, _weights(s.msg), personal.load_state(s),
                                               parse_model(s.config), tcfg, **common)
        personal.save_state(s, own, train_config=s.config)
    else:
        weights, metrics = train_round(data, pre, _weights(s.msg), parse_model(s.config), tcfg, **common)
    if ledger is not None:
        s.keep(ledger)
    _track(s, data, "train", metrics)
    arrays = ArrayRecord({k: Array(v) for k, v in weights.items()})
    return RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics), "info": _info(data)})


def evaluate(msg: Message, context: Context) -> Message:
    """Loss, ROC AUC, accuracy and score histograms of the global model on the test rows."""
    return handle("evaluate", msg, context, _where, _evaluate)


def _evaluate(s: Session) -> RecordDict:
    data, pre = _setup(s)
    if _held_out(s):  # external validation: every row it has (the preprocessing is the federation's)
        data = data.external()
    private = s.policy is not None and s.policy.evaluation == "dp" and s.run is not None
    if private:
        run, policy = s.run, s.policy
        assert run is not None and policy is not None and s.book is not None
        if not run.reserved:
            s.book.reserve(run, policy.max_epsilon_per_run, policy.delta, policy.lifetime_epsilon)
        ledger = s.ledger()
        if ledger.would_exceed((policy.evaluation_noise_multiplier, 1.0, 1), run.delta, run.reserved):
            raise Refused("privacy.max-epsilon-per-run", f"an evaluation after epsilon {run.epsilon:.3f}",
                          f"{run.reserved:g} for this run")
        metrics = evaluate_round(data, pre, _weights(s.msg), parse_model(s.config),
                                 dp=(policy.evaluation_noise_multiplier, ledger))
        s.keep(ledger)
    else:
        metrics = evaluate_round(data, pre, _weights(s.msg), parse_model(s.config))
    if s.run is not None:
        s.run.evaluations += 1
    settings = PersonalSettings.from_config(s.config)
    if settings.active and not _held_out(s) and personal.last_round(s.config):
        metrics |= personal.personal_metrics(s, settings, data, pre, _weights(s.msg), _dp,
                                             _personal_release(s, private))
    _track(s, data, "evaluate", metrics)
    return RecordDict({"metrics": MetricRecord(metrics), "info": _info(data)})


def _personal_release(s: Session, private: bool) -> Callable[..., dict[str, float] | None]:
    """How the personal model's numbers leave: exact, or (a policy's ``release.evaluation: dp``) as one more
    of the run's evaluations, noised and charged; None when the policy has no evaluation left for it."""
    def exact(labels: np.ndarray, scores: np.ndarray, result: EvalResult) -> dict[str, float]:
        return {"accuracy": result.accuracy, "auc": result.auc, "loss": result.loss}

    def noised(labels: np.ndarray, scores: np.ndarray, result: EvalResult) -> dict[str, float] | None:
        run, policy = s.run, s.policy
        assert run is not None and policy is not None
        ledger = s.ledger()
        if run.evaluations >= policy.max_evaluations_per_run or ledger.would_exceed(
                (policy.evaluation_noise_multiplier, 1.0, 1), run.delta, run.reserved):
            log.warning("hospital %s: no evaluation left in this run for the personal model", s.where.name)
            return None
        released = noisy_evaluation(labels, scores, policy.evaluation_noise_multiplier, ledger,
                                    np.random.default_rng(secrets.randbits(128)))
        s.keep(ledger)
        run.evaluations += 1
        return released
    return noised if private else exact


def baseline(msg: Message, context: Context) -> Message:
    """Majority-class and local-only baselines on this hospital's own data."""
    return handle("query.baseline", msg, context, _where, _baseline)


def _baseline(s: Session) -> RecordDict:
    if parse_privacy(s.config) is not None:  # DP-SGD: they would release training rows outside the budget
        return RecordDict({"metrics": MetricRecord({})})
    data, pre = _setup(s)
    metrics = majority_baseline(data)
    if s.config.get("baseline.local-only", True):
        metrics |= local_only_baseline(data, pre, _weights(s.msg), parse_model(s.config), parse_train(s.config),
                                       rounds=int(s.config["baseline.rounds"]), seed=int(s.config["seed"]))
    return RecordDict({"metrics": MetricRecord(metrics)})
