"""Personalisation at a hospital: its own parts between messages, and its personal model's numbers.

The per-hospital parts (:mod:`fedheart.personal.methods`) are kept in the SuperNode's state for the run
(``context.state``) and, where the hospital has a state folder, in ``<state-dir>/personal/run-<id>/``:
``state.npz`` (read back if the SuperNode restarted) and, after the last round, the personal model as a
model folder (``final_model.json`` and weights) that ``fedheart predict`` and ``fedheart export`` use.
Nothing here is ever sent; the server gets the personal model's accuracy, AUC and loss once, after the
last round (under a policy's ``release.evaluation: dp``, noised and charged like any evaluation).
"""

from __future__ import annotations

import io
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord

from client_app.gate import Session
from fedheart.hospital import HospitalData
from fedheart.personal import PersonalSettings
from fedheart.personal.methods import evaluate_personal, finetune, personal_model
from fedheart.preprocess import Preprocessor
from fedheart.privacy import EPSILON
from fedheart.protocol import parse_model, parse_train
from fedheart.runs import atomic_write_bytes, save_model_files
from fedheart.saved_model import model_meta
from fedheart.specs import ModelSpec

log = logging.getLogger("fedheart.hospital")

Weights = dict[str, np.ndarray]
STATE, TRAIN_CONFIG = "personal", "personal-train"  # context.state records
TRAIN_KEYS = ("privacy.", "train.", "proximal-mu")  # what a fine-tune after the last round reuses


def folder(s: Session) -> Path | None:
    """``<state-dir>/personal/run-<id>``, where the hospital has a state folder."""
    return None if s.state is None else s.state / "personal" / f"run-{s.context.run_id}"


def load_state(s: Session) -> Weights:
    """The hospital's own parts for this run (empty before its first round)."""
    record = s.context.state.array_records.get(STATE)
    if record is not None:
        return {k: v.numpy() for k, v in record.items()}
    where = folder(s)
    if where is not None and (where / "state.npz").is_file():
        with np.load(where / "state.npz", allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    return {}


def save_state(s: Session, state: Weights, *, train_config: dict[str, Any] | None = None) -> None:
    """Keep the parts in the SuperNode's state and in the state folder (written atomically)."""
    s.context.state[STATE] = ArrayRecord({k: Array(np.asarray(v)) for k, v in state.items()})
    if train_config is not None:
        s.context.state[TRAIN_CONFIG] = ConfigRecord(
            {k: v for k, v in train_config.items() if k.startswith(TRAIN_KEYS)})
    where = folder(s)
    if where is not None and state:
        buffer = io.BytesIO()
        np.savez(buffer, **state)
        atomic_write_bytes(where / "state.npz", buffer.getvalue())


def last_round(config: dict[str, Any]) -> bool:
    """Whether this evaluate message is the run's last round (when the personal model is released)."""
    rounds = int(config.get("rounds", 0) or 0)
    return rounds > 0 and int(config.get("server-round", 0) or 0) >= rounds


def _finetuned(s: Session, settings: PersonalSettings, data: HospitalData, pre: Preprocessor, final: Weights,
               dp_of: Any) -> tuple[Weights, dict[str, float]]:
    """Fine-tuning after the last round, under the privacy settings the hospital accepted for training; the
    personal model and, under DP-SGD, ``personal-epsilon`` (the run's epsilon after it)."""
    stored = s.context.state.config_records.get(TRAIN_CONFIG)
    config = {**s.config, **(dict(stored) if stored else {})}
    session = replace(s, config=config)
    dp = dp_of(session)
    ledger = s.ledger() if dp else None
    public_rows = s.run.public_rows if (dp is not None and s.run is not None and s.policy is not None) else None
    state, metrics = finetune(settings, data, pre, final, parse_model(config), parse_train(config),
                              seed=int(config["seed"]), server_round=int(config.get("server-round", 0)), dp=dp,
                              ledger=ledger, public_rows=public_rows)
    if ledger is not None:
        s.keep(ledger)
    save_state(s, state)
    spent = {"personal-epsilon": metrics[EPSILON]} if EPSILON in metrics else {}
    return state, spent | {k: metrics[k] for k in ("personal-kept-global",) if k in metrics}


def personal_metrics(s: Session, settings: PersonalSettings, data: HospitalData, pre: Preprocessor,
                     received: Weights, dp_of: Any, release: Any) -> dict[str, float]:
    """The personal model's ``personal-accuracy``, ``personal-auc`` and ``personal-loss`` after the last round
    (``release(labels, scores)``: the reply's numbers, exact or DP); its model folder written where it can be."""
    spec = parse_model(s.config)
    spent: dict[str, float] = {}
    if settings.name == "finetune":
        state, spent = _finetuned(s, settings, data, pre, received, dp_of)
    else:
        state = load_state(s)
    found = personal_model(settings, spec, pre.num_features, received, state)
    if found is None:
        return {}
    personal_spec, weights = found
    _, x_test = data.features(pre)
    result = evaluate_personal(personal_spec, weights, x_test, data.y_test)
    _write_model(s, settings, personal_spec, weights, pre)
    numbers = release(data.y_test, result.scores, result)
    if numbers is None:
        return spent
    return {**spent, **{f"personal-{k}": float(numbers[k]) for k in ("accuracy", "auc", "loss")}}


def _write_model(s: Session, settings: PersonalSettings, spec: ModelSpec, weights: Weights,
                 pre: Preprocessor) -> None:
    where = folder(s)
    if where is None:
        return
    meta = model_meta(spec, pre, preprocessing=pre.to_dict(), rounds=int(s.config.get("server-round", 0)),
                      personalization=settings.name, hospital=s.where.name)
    save_model_files(where, weights, meta)
    log.info("hospital %s: personal model (%s) written to %s", s.where.name, settings.name, where)
