"""The server's run as explicit phases: statistics, then rounds (liveness wait, train, evaluate,
checkpoint), then finish (final model, baselines, summary).

It mirrors ``Strategy.start`` of Flower 1.42 but keeps every hospital's metrics, writes a checkpoint
after each round and can resume from one. The strategy still samples, configures and aggregates;
the training step (plain or SecAgg+, ``server_app.training``) and the privacy monitor
(``server_app.privacy``) are composed in. Each phase is a small unit: ``server_app.statistics``,
``server_app.liveness``, ``server_app.checkpoint``, ``server_app.finish``; :meth:`Federation.start`
and :meth:`Federation.run_round` are public so tests and benchmarks drive single rounds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.exception import InconsistentMessageReplies
from flwr.serverapp.strategy import Strategy

from fedheart import stats as fstats
from fedheart.config import AppConfig, to_yaml
from fedheart.model import build_model, get_weights
from fedheart.models import resolve
from fedheart.personal import PersonalSettings, shared_keys
from fedheart.preprocess import FLAMBY_COLUMNS, Preprocessor, flamby_preprocessor, project_preprocessor
from fedheart.protocol import task_settings, train_settings
from fedheart.runs import TIMINGS, RunDir, output_root, write_text
from fedheart.summary import federation_metrics
from fedheart.tracking import aggregator_metrics, aggregator_params, aggregator_tracker, experiment_for_run
from server_app import checkpoint
from server_app.errors import FederationError
from server_app.finish import finish
from server_app.liveness import await_hospitals
from server_app.privacy import BudgetExhausted, PrivacyMonitor
from server_app.records import config_record, from_arrays, metrics_of, to_arrays
from server_app.replies import error_message, error_reasons
from server_app.run_state import History, Hospital
from server_app.statistics import collect_statistics
from server_app.training import TrainingStep, training_step

__all__ = ["Federation", "FederationError", "History", "Hospital", "RoundResult", "error_message"]

log = logging.getLogger("fedheart.server")

PHASES = {"query.stats": "statistics", "query.baseline": "baselines"}  # timings.jsonl phase of a query


@dataclass
class RoundResult:
    """One round: the model after it, each hospital's train row and evaluation (empty when the privacy
    budget stopped the run before the round)."""

    arrays: Any
    train_rows: list[dict]
    evaluation: dict[str, dict]
    stopped: bool = False


def _linear_layers(cfg: AppConfig) -> list[str]:
    kind, params = resolve(cfg.model)
    return kind.linear_layers(params)


class Federation:
    """One federated run of the heart-disease model."""

    def __init__(self, cfg: AppConfig, grid: Grid, strategy: Strategy, run_id: int,
                 training: TrainingStep | None = None) -> None:
        self.cfg = cfg
        self.grid = grid
        self.strategy = strategy
        self.training = training or training_step(cfg)
        self.privacy = PrivacyMonitor(cfg, strategy)
        self.run_id = run_id
        self.hospitals: dict[int, Hospital] = {}
        self.history = History()
        self.preprocessing = ""
        self.run_dir = self._make_run_dir()
        self.experiment = experiment_for_run(self.run_dir.path, cfg.tracking.experiment_prefix, run_id)
        self.tracker = aggregator_tracker(cfg, self.experiment)
        self.train_cfg, self.eval_cfg = ConfigRecord(), ConfigRecord()  # set by start()

    # -- messages -----------------------------------------------------------------------------
    def _make_run_dir(self) -> RunDir:
        if self.cfg.resume:
            path = Path(self.cfg.resume).expanduser().resolve()
            return RunDir(path.parent if path.is_file() else path)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        name = self.cfg.output.run_name or f"{stamp}-{self.cfg.strategy.name}-run{self.run_id}"
        return RunDir(output_root(self.cfg.output.root) / name)

    def send(self, node_ids: Iterable[int], message_type: str, content: RecordDict) -> list[Message]:
        """One query (statistics or baselines) to these hospitals; their replies."""
        messages = [Message(content=content, message_type=message_type, dst_node_id=n) for n in node_ids]
        phase, server_round = PHASES[message_type], self.history.last_round
        return self.exchange(phase, server_round if phase == "baselines" else 0, messages)

    def exchange(self, phase: str, server_round: int, messages: Iterable[Message]) -> list[Message]:
        """``send_and_receive`` within ``round_timeout``; its timings go to ``timings.jsonl``: the seconds
        until the server had each hospital's reply (when the grid notes them: PromptGrid) and the
        phase's whole wall time (node and run ids as strings: they are 64-bit)."""
        started = time.perf_counter()
        replies = list(self.grid.send_and_receive(messages, timeout=self.cfg.round_timeout))
        seconds = time.perf_counter() - started
        came = dict(getattr(self.grid, "reply_seconds", {}))
        rows = [{"round": server_round, "phase": phase, "hospital": self.name_of(r),
                 "node": str(r.metadata.src_node_id), "seconds": came.get(r.metadata.src_node_id),
                 "ok": not r.has_error()} for r in replies]
        self.run_dir.append_metrics([*rows, {"round": server_round, "phase": phase, "hospital": "all",
                                             "seconds": seconds, "run": str(self.run_id)}], TIMINGS)
        return replies

    def name_of(self, reply: Message) -> str:
        """The reply's hospital; a node unknown since the statistics phase (a SuperNode that restarted
        and rejoined with a new node id) is recognised by the name in its reply's ``info`` record."""
        node = reply.metadata.src_node_id
        hospital = self.hospitals.get(node)
        if hospital:
            return hospital.name
        info = None if reply.has_error() else reply.content.config_records.get("info")
        if not info or "hospital" not in info:
            return f"node-{node}"
        name = str(info["hospital"])
        known = [n for n, h in self.hospitals.items() if h.name == name]
        if known:
            old = self.hospitals.pop(known[0])
            self.hospitals[node] = Hospital(node, name, old.train_rows, old.holdout)
            log.info("Hospital %s rejoined as node %d (was node %d)", name, node, old.node_id)
        return name

    # -- what the statistics phase established ------------------------------------------------
    def collect_statistics(self) -> None:
        """The statistics phase (``server_app.statistics``), then the training step's own checks."""
        collect_statistics(self)
        self.training.after_statistics(self)

    def train_rows(self) -> dict[str, int]:
        """Training rows of each hospital that trains (the held-out one does not)."""
        return {h.name: h.train_rows for h in self.hospitals.values() if not h.holdout}

    def held_out(self) -> set[int]:
        """Node ids of the held-out hospital (``data.holdout``)."""
        return {n for n, h in self.hospitals.items() if h.holdout}

    def internal(self, by_hospital: dict[str, dict]) -> dict[str, dict]:
        """The hospitals that train, without the held-out one (``data.holdout``: reported apart)."""
        held = {h.name for h in self.hospitals.values() if h.holdout}
        return {n: m for n, m in by_hospital.items() if n not in held}

    def preprocessor(self) -> Preprocessor:
        """The feature layout (for the model's input size and the saved model's metadata)."""
        if self.cfg.data.pipeline == "flamby":
            import pandas as pd

            return flamby_preprocessor(pd.DataFrame(np.zeros((2, len(FLAMBY_COLUMNS) + 1)),
                                                    columns=[*FLAMBY_COLUMNS, "num"]))
        return project_preprocessor(fstats.GlobalStats.from_json(self.preprocessing))

    def initial_weights(self) -> dict[str, np.ndarray]:
        model = build_model(self.cfg.model, self.preprocessor().num_features, seed=self.cfg.seed)
        return get_weights(model)

    # -- rounds -------------------------------------------------------------------------------
    def await_hospitals(self, server_round: int, phase: str) -> None:
        """The liveness wait before a phase samples (``server_app.liveness``)."""
        await_hospitals(self.cfg, self.grid, self.strategy, self.held_out, server_round, phase)

    def aggregate_train(self, server_round: int, arrays: Any, replies: list[Message]) -> tuple[Any, list[dict]]:
        """Enforce min_replies, let the strategy aggregate; the new arrays and one train row per hospital."""
        ok = [r for r in replies if not r.has_error()]
        for reason in error_reasons(replies):
            log.warning("Round %d: a hospital failed to train: %s", server_round, reason)
        if len(ok) < self.cfg.min_replies:
            raise FederationError(
                f"round {server_round}: only {len(ok)} hospital(s) returned an update, at least "
                f"{self.cfg.min_replies} required (min_replies); errors: "
                f"{'; '.join(error_reasons(replies)) or 'none (timed out)'}")
        new_arrays, _ = self.strategy.aggregate_train(
            server_round, self.privacy.trainable(server_round, replies, self.name_of))  # spent budgets left out
        rows = [{"round": server_round, "phase": "train", "hospital": self.name_of(r), **metrics_of(r.content)}
                for r in ok]
        return (self.merged(arrays, new_arrays) if new_arrays is not None else arrays), rows

    def shared_keys(self, keys: Iterable[str]) -> list[str]:
        """The arrays the hospitals return and the strategy aggregates (personalisation: not the heads that
        stay at the hospitals)."""
        p = self.cfg.personalization
        return shared_keys(PersonalSettings(p.name), keys, _linear_layers(self.cfg))

    def merged(self, arrays: Any, aggregated: Any) -> Any:
        """The new global arrays: the aggregated shared ones, the rest as they were (the hospitals keep their own).
        A reply with any other arrays than the shared ones fails the round."""
        expected = self.shared_keys(arrays.keys())
        if set(aggregated.keys()) != set(expected):
            raise FederationError(f"the aggregated update holds the arrays {sorted(aggregated.keys())}, expected the "
                                  f"shared arrays {sorted(expected)} (personalization={self.cfg.personalization.name})")
        if len(expected) == len(arrays):
            return aggregated
        return type(arrays)({k: aggregated[k] if k in aggregated else arrays[k] for k in arrays})

    def evaluate(self, server_round: int, arrays: Any) -> dict[str, dict]:
        """Every sampled hospital's metrics of these arrays, in the configured order."""
        self.await_hospitals(server_round, "evaluate")
        replies = self.exchange("evaluate", server_round, self.strategy.configure_evaluate(
            server_round, arrays, ConfigRecord(dict(self.eval_cfg)), self.grid))
        for reason in error_reasons(replies):
            log.warning("Round %d: a hospital failed to evaluate: %s", server_round, reason)
        try:  # Flower's own aggregate (logged only; the federation's numbers come from each hospital's metrics)
            self.strategy.aggregate_evaluate(server_round, replies)
        except InconsistentMessageReplies as exc:  # e.g. a hospital whose policy left no release for its personal model
            log.info("Round %d: Flower's evaluate aggregate skipped: %s", server_round, exc)
        order = {name: i for i, name in enumerate(self.cfg.data.hospitals)}
        got = {self.name_of(r): metrics_of(r.content) for r in replies if not r.has_error()}
        return dict(sorted(got.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))

    def start(self) -> Any:
        """The statistics phase, the initial (or resumed) model and the rounds' settings; the arrays the
        next round trains."""
        cfg = self.cfg
        started = time.perf_counter()
        write_text(self.run_dir.path / "config.yaml", to_yaml(cfg))
        self.collect_statistics()
        self.history.phase_seconds["statistics"] = time.perf_counter() - started
        self.tracker.log_params(aggregator_params(cfg, self.train_rows()))
        self.initial = self.initial_weights()
        weights = self.initial
        if cfg.resume:
            restored = checkpoint.restore(cfg, self.strategy)
            self.preprocessing = restored.preprocessing or self.preprocessing
            self.history.last_round, self.history.federation = restored.last_round, restored.federation
            self.initial, weights = restored.initial, restored.weights
            self.run_dir.truncate_metrics_after(self.history.last_round)
            log.info("Resuming %s from round %d", self.run_dir.path, self.history.last_round)
        task = task_settings(cfg, self.preprocessing, self.experiment)
        self.train_cfg = config_record({**task, **train_settings(cfg), **self.privacy.start(self.train_rows())})
        self.eval_cfg = config_record(task)
        return to_arrays(weights)

    def run_round(self, server_round: int, arrays: Any) -> RoundResult:
        """One round: train, evaluate, record (metrics, tracker) and checkpoint."""
        t0 = time.perf_counter()
        try:
            arrays, train_rows = self.training.train(self, server_round, arrays, ConfigRecord(dict(self.train_cfg)))
        except BudgetExhausted as stop:  # the privacy budget ends the run: completed, not failed
            self.privacy.stop(str(stop))
            return RoundResult(arrays, [], {}, stopped=True)
        per_hospital = self.evaluate(server_round, arrays)
        internal = self.internal(per_hospital)
        fed = federation_metrics(internal) if internal else {}
        fed["train-loss"] = float(np.mean([r["train-loss"] for r in train_rows])) if train_rows else float("nan")
        fed["seconds"] = time.perf_counter() - t0
        epsilon = self.privacy.round_epsilon(server_round, train_rows)
        if epsilon is not None:
            fed["epsilon"] = epsilon
        self.history.federation[server_round] = fed
        eval_rows = [{"round": server_round, "phase": "evaluate", "hospital": name,
                      **{k: v for k, v in m.items() if not k.startswith("hist-")}} for name, m in per_hospital.items()]
        self.run_dir.append_metrics(train_rows + eval_rows + [
            {"round": server_round, "phase": "federation", "hospital": "all", **fed}])
        self.tracker.log_metrics(aggregator_metrics(fed, train_rows), step=server_round)
        checkpoint.save(self.run_dir, self.cfg, self.strategy, from_arrays(arrays), server_round,
                        preprocessing=self.preprocessing, federation=self.history.federation, initial=self.initial)
        self.history.last_round = server_round
        log.info("Round %d/%d done in %.1fs | train loss %.3f | %s | mean acc %.3f | pooled AUC %.3f",
                 server_round, self.cfg.rounds, fed["seconds"], fed["train-loss"],
                 " ".join(f"{n} {m['accuracy']:.2f}/{m['auc']:.2f}" for n, m in per_hospital.items()),
                 fed.get("mean-accuracy", float("nan")), fed.get("pooled-auc", float("nan")))
        return RoundResult(arrays, train_rows, per_hospital)

    def run(self) -> History:
        """Statistics, then rounds (resuming if configured), then finish: final model, baselines, summary."""
        started = time.perf_counter()
        arrays = self.start()
        per_hospital: dict[str, dict] = {}
        for server_round in range(self.history.last_round + 1, self.cfg.rounds + 1):
            result = self.run_round(server_round, arrays)
            if result.stopped:
                break
            arrays, per_hospital = result.arrays, result.evaluation
        if not per_hospital:  # resumed at the end: evaluate the final model once more
            per_hospital = self.evaluate(self.cfg.rounds, arrays)
        self.history.final = per_hospital
        finish(self, from_arrays(arrays), per_hospital, self.train_cfg, time.perf_counter() - started)
        return self.history
