"""The server's run: federated statistics, rounds with checkpoints, baselines, summary.

It mirrors ``Strategy.start`` of Flower 1.42 but keeps every hospital's metrics, writes a
checkpoint after each round and can resume from one. The strategy still does the sampling,
configuration and aggregation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from fedheart import stats as fstats
from fedheart.config import CENTRAL_MODES, AppConfig, to_yaml
from fedheart.model import build_model, get_weights
from fedheart.models import full_spec, same_model
from fedheart.onnx_export import write_run_onnx
from fedheart.preprocess import FLAMBY_COLUMNS, Preprocessor, flamby_preprocessor, project_preprocessor
from fedheart.protocol import task_settings, train_settings
from fedheart.report import write_report
from fedheart.runs import TIMINGS, RunDir, load_checkpoint, output_root, write_json, write_text
from fedheart.summary import federation_metrics, summary_table
from fedheart.tracking import aggregator_metrics, aggregator_params, aggregator_tracker, experiment_for_run
from server_app.holdout import TrainingGrid
from server_app.privacy import BudgetExhausted, PrivacyMonitor
from server_app.records import config_record, from_arrays, metrics_of, to_arrays

log = logging.getLogger("fedheart.server")

STRATEGY_STATE = ("m_t", "v_t")  # FedOpt family: server optimiser moments
PHASES = {"query.stats": "statistics", "query.baseline": "baselines"}  # timings.jsonl phase of a query


class FederationError(RuntimeError):
    """The run cannot go on; the message says why."""


@dataclass
class Hospital:
    node_id: int
    name: str
    train_rows: int
    holdout: bool = False  # data.holdout: it evaluates only (external validation)


@dataclass
class History:
    last_round: int = 0
    federation: dict[int, dict[str, float]] = field(default_factory=dict)
    final: dict[str, dict[str, Any]] = field(default_factory=dict)
    phase_seconds: dict[str, float] = field(default_factory=dict)  # statistics, baselines (bench/perf.py)


def error_message(reason: str) -> str:
    """The exception's own message from a failed reply's reason. In a simulation Flower puts the Ray
    actor's whole traceback there (dozens of lines per hospital); the traceback itself stays in the
    simulation's log (a deployment: the SuperNode's)."""
    text = reason.strip().removesuffix("'>").rstrip()
    if "Message: " in text:  # Flower's "Exception ClientAppException occurred. Message: ..."
        return text.rsplit("Message: ", 1)[1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else text


def _error_reasons(replies: Iterable[Message]) -> list[str]:
    return [f"node {m.metadata.src_node_id}: {error_message(m.error.reason)}" for m in replies if m.has_error()]


class Federation:
    """One federated run of the heart-disease model."""

    def __init__(self, cfg: AppConfig, grid: Grid, strategy: Strategy, run_id: int) -> None:
        self.cfg = cfg
        self.grid = grid
        self.strategy = strategy
        self.privacy = PrivacyMonitor(cfg, strategy)
        self.run_id = run_id
        self.hospitals: dict[int, Hospital] = {}
        self.history = History()
        self.preprocessing = ""
        self.run_dir = self._make_run_dir()
        self.experiment = experiment_for_run(self.run_dir.path, cfg.tracking.experiment_prefix, run_id)
        self.tracker = aggregator_tracker(cfg, self.experiment)

    # -- set-up -------------------------------------------------------------------------------
    def _make_run_dir(self) -> RunDir:
        if self.cfg.resume:
            from pathlib import Path

            path = Path(self.cfg.resume).expanduser().resolve()
            return RunDir(path.parent if path.is_file() else path)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        name = self.cfg.output.run_name or f"{stamp}-{self.cfg.strategy.name}-run{self.run_id}"
        return RunDir(output_root(self.cfg.output.root) / name)

    def _send(self, node_ids: Iterable[int], message_type: str, content: RecordDict) -> list[Message]:
        messages = [Message(content=content, message_type=message_type, dst_node_id=n) for n in node_ids]
        phase, server_round = PHASES[message_type], self.history.last_round
        return self._exchange(phase, server_round if phase == "baselines" else 0, messages)

    def _exchange(self, phase: str, server_round: int, messages: Iterable[Message]) -> list[Message]:
        """``send_and_receive`` within ``round_timeout``; its timings go to ``timings.jsonl``: the seconds
        until the server had each hospital's reply (when the grid notes them: PromptGrid) and the
        phase's whole wall time (node and run ids as strings: they are 64-bit)."""
        started = time.perf_counter()
        replies = list(self.grid.send_and_receive(messages, timeout=self.cfg.round_timeout))
        seconds = time.perf_counter() - started
        came = dict(getattr(self.grid, "reply_seconds", {}))
        rows = [{"round": server_round, "phase": phase, "hospital": self._name(r), "node": str(r.metadata.src_node_id),
                 "seconds": came.get(r.metadata.src_node_id), "ok": not r.has_error()} for r in replies]
        self.run_dir.append_metrics([*rows, {"round": server_round, "phase": phase, "hospital": "all",
                                             "seconds": seconds, "run": str(self.run_id)}], TIMINGS)
        return replies

    def collect_statistics(self) -> None:
        """Ask every hospital for its sufficient statistics; combine them into global ones."""
        sample_nodes(self.grid, self.cfg.min_hospitals, self.cfg.min_hospitals)  # waits until enough connect
        all_ids = sorted(self.grid.get_node_ids())
        log.info("Federated statistics: asking %d hospitals (nodes %s)", len(all_ids), all_ids)
        content = RecordDict({"config": config_record(task_settings(self.cfg))})
        replies = self._send(all_ids, "query.stats", content)
        parts = []
        for reply in replies:
            if reply.has_error():
                continue
            info = reply.content.config_records["info"]
            if str(info["hospital"]) == self.cfg.data.holdout:  # no statistics: it only evaluates
                self.hospitals[reply.metadata.src_node_id] = Hospital(reply.metadata.src_node_id,
                                                                      str(info["hospital"]), 0, holdout=True)
                continue
            stats = metrics_of(reply.content)
            self.hospitals[reply.metadata.src_node_id] = Hospital(
                reply.metadata.src_node_id, str(info["hospital"]), int(stats["n"]))
            parts.append(stats)
        errors = _error_reasons(replies)
        for reason in errors:
            log.error("Hospital failed to report statistics: %s", reason)
        held = [h.name for h in self.hospitals.values() if h.holdout]
        if self.cfg.data.holdout and not held:
            raise FederationError(f"data.holdout={self.cfg.data.holdout}: no hospital of that name answered; "
                                  f"errors: {'; '.join(errors) or 'none'}")
        if len(parts) < self.cfg.min_hospitals - len(held):
            raise FederationError(
                f"only {len(parts)} of the required {self.cfg.min_hospitals - len(held)} hospitals reported their "
                f"statistics; errors: {'; '.join(errors) or 'none (timeout)'}")
        names = [h.name for h in self.hospitals.values()]
        if len(set(names)) != len(names):
            raise FederationError(f"two nodes report the same hospital name: {sorted(names)}")
        if self.cfg.data.pipeline == "project":
            global_stats = fstats.GlobalStats.from_totals(fstats.combine(parts),
                                                         noise_std=self.privacy.stats_noise_std(len(parts)))
            self.preprocessing = global_stats.to_json()
        log.info("Hospitals: %s", ", ".join(f"{h.name} ({h.train_rows} training rows)" if not h.holdout
                                           else f"{h.name} (held out: evaluates only)"
                                           for h in self.hospitals.values()))

    def train_rows(self) -> dict[str, int]:
        """Training rows of each hospital that trains (the held-out one does not)."""
        return {h.name: h.train_rows for h in self.hospitals.values() if not h.holdout}

    def held_out(self) -> set[int]:
        """Node ids of the held-out hospital (``data.holdout``)."""
        return {n for n, h in self.hospitals.items() if h.holdout}

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

    # -- checkpoints --------------------------------------------------------------------------
    def _checkpoint(self, weights: dict[str, np.ndarray], server_round: int) -> None:
        strategy_state = {
            attr: {k: torch.as_tensor(v) for k, v in getattr(self.strategy, attr).items()}
            for attr in STRATEGY_STATE if getattr(self.strategy, attr, None)
        }
        self.run_dir.save_checkpoint({
            "round": server_round,
            "weights": {k: torch.as_tensor(np.asarray(v)) for k, v in weights.items()},
            "strategy": self.cfg.strategy.name,
            "strategy_state": strategy_state,
            "preprocessing": self.preprocessing,
            "model": full_spec(self.cfg.model).to_dict(),  # a name only in checkpoints made before fedheart.models
            "pipeline": self.cfg.data.pipeline,
            "federation": {str(k): v for k, v in self.history.federation.items()},
            "initial_weights": {k: torch.as_tensor(np.asarray(v)) for k, v in self.initial.items()},
        })

    def _restore(self) -> dict[str, np.ndarray]:
        state = load_checkpoint(self.cfg.resume or "")
        for key, want in (("strategy", self.cfg.strategy.name), ("pipeline", self.cfg.data.pipeline)):
            if state.get(key) != want:
                raise FederationError(f"resume: the checkpoint was made with {key}={state.get(key)!r}, "
                                      f"this run has {key}={want!r}; use the same configuration")
        if not same_model(state.get("model"), self.cfg.model):
            raise FederationError(f"resume: the checkpoint was made with model={state.get('model')!r}, "
                                  f"this run has model={self.cfg.model.to_dict()!r}; use the same configuration")
        for attr, arrays in state.get("strategy_state", {}).items():
            setattr(self.strategy, attr, {k: v.numpy() for k, v in arrays.items()})
        self.preprocessing = state["preprocessing"] or self.preprocessing
        self.history.last_round = int(state["round"])
        self.history.federation = {int(k): v for k, v in state.get("federation", {}).items()}
        self.initial = {k: v.numpy() for k, v in state["initial_weights"].items()}
        self.run_dir.truncate_metrics_after(self.history.last_round)
        log.info("Resuming %s from round %d", self.run_dir.path, self.history.last_round)
        return {k: v.numpy() for k, v in state["weights"].items()}

    # -- rounds -------------------------------------------------------------------------------
    def _name(self, reply: Message) -> str:
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

    def await_hospitals(self, server_round: int, phase: str) -> None:
        """Before the strategy samples: wait, at most ``round_timeout``, for ``min_hospitals`` nodes.

        Flower's ``sample_nodes`` sizes its sample from the nodes online when it is called, then
        waits with no deadline for ``min_available_nodes``: a hospital that is down for good would
        stall the run, and one that is back soon would make the round leave out a random healthy
        hospital. Here the wait has a deadline; after it the round goes on with the hospitals online
        if there are at least ``min_replies`` (never under central DP, whose accounting assumes
        every hospital), else the run stops with the reason.
        """
        want, deadline, warned = self.cfg.min_hospitals, time.monotonic() + self.cfg.round_timeout, False
        while (online := len(list(self.grid.get_node_ids()))) < want and time.monotonic() < deadline:
            if not warned:
                log.info("Round %d (%s): %d of %d hospitals online; waiting up to %g s (round_timeout)",
                         server_round, phase, online, want, self.cfg.round_timeout)
                warned = True
            time.sleep(1.0)  # polling Flower's node list, as sample_nodes does
        base = self.strategy
        while hasattr(base, "strategy"):  # Flower's DP wrappers keep the wrapped strategy here
            base = base.strategy
        held = len(self.held_out() & set(self.grid.get_node_ids())) if phase == "train" else 0
        if online >= want:
            base.min_available_nodes = want - held  # type: ignore[attr-defined]
            return
        why = (f"round {server_round} ({phase}): only {online} of min_hospitals={want} hospitals online after "
               f"waiting {self.cfg.round_timeout:g} s (round_timeout)")
        if online < self.cfg.min_replies:
            raise FederationError(f"{why}; at least {self.cfg.min_replies} required (min_replies)")
        if self.cfg.privacy.mode in CENTRAL_MODES:
            raise FederationError(f"{why}; privacy={self.cfg.privacy.mode} accounts for every hospital in every "
                                  "round, so the run cannot go on without one")
        log.warning("%s; going on with those %d", why, online)
        base.min_available_nodes = online - held  # type: ignore[attr-defined]

    def _train(self, server_round: int, arrays: Any, config: ConfigRecord) -> tuple[Any, list[dict]]:
        """One training round: the strategy's instructions out, its aggregate of the replies back."""
        self.await_hospitals(server_round, "train")
        replies = self._exchange("train", server_round,
                                 self.privacy.configure_train(server_round, arrays, config,
                                                               TrainingGrid(self.grid, self.held_out)))
        return self._aggregate_train(server_round, arrays, replies)

    def _aggregate_train(self, server_round: int, arrays: Any, replies: list[Message]) -> tuple[Any, list[dict]]:
        """Enforce min_replies, let the strategy aggregate; the new arrays and one train row per hospital."""
        ok = [r for r in replies if not r.has_error()]
        for reason in _error_reasons(replies):
            log.warning("Round %d: a hospital failed to train: %s", server_round, reason)
        if len(ok) < self.cfg.min_replies:
            raise FederationError(
                f"round {server_round}: only {len(ok)} hospital(s) returned an update, at least "
                f"{self.cfg.min_replies} required (min_replies); errors: "
                f"{'; '.join(_error_reasons(replies)) or 'none (timed out)'}")
        new_arrays, _ = self.strategy.aggregate_train(
            server_round, self.privacy.trainable(server_round, replies, self._name))  # spent budgets left out
        rows = [{"round": server_round, "phase": "train", "hospital": self._name(r), **metrics_of(r.content)}
                for r in ok]
        return (new_arrays if new_arrays is not None else arrays), rows

    def _evaluate(self, server_round: int, arrays: Any, config: ConfigRecord) -> dict[str, dict]:
        self.await_hospitals(server_round, "evaluate")
        replies = self._exchange("evaluate", server_round,
                                 self.strategy.configure_evaluate(server_round, arrays, config, self.grid))
        for reason in _error_reasons(replies):
            log.warning("Round %d: a hospital failed to evaluate: %s", server_round, reason)
        self.strategy.aggregate_evaluate(server_round, replies)
        return self._ordered({self._name(r): metrics_of(r.content) for r in replies if not r.has_error()})

    def _internal(self, by_hospital: dict[str, dict]) -> dict[str, dict]:
        """The hospitals that train, without the held-out one (``data.holdout``: reported apart)."""
        held = {h.name for h in self.hospitals.values() if h.holdout}
        return {n: m for n, m in by_hospital.items() if n not in held}

    def _ordered(self, by_hospital: dict[str, dict]) -> dict[str, dict]:
        """Hospitals in the configured order (then by name), whatever order replies came in."""
        order = {name: i for i, name in enumerate(self.cfg.data.hospitals)}
        return dict(sorted(by_hospital.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))

    def run(self) -> History:
        """Statistics, then rounds (resuming if configured), then baselines and the summary."""
        started = time.perf_counter()
        cfg = self.cfg
        write_text(self.run_dir.path / "config.yaml", to_yaml(cfg))
        self.collect_statistics()
        self.history.phase_seconds["statistics"] = time.perf_counter() - started
        self.tracker.log_params(aggregator_params(cfg, self.train_rows()))
        self.initial = self.initial_weights()
        weights = self._restore() if cfg.resume else self.initial
        arrays = to_arrays(weights)
        task = task_settings(cfg, self.preprocessing, self.experiment)
        train_cfg = config_record({**task, **train_settings(cfg),
                                   **self.privacy.start(self.train_rows())})
        eval_cfg = config_record(task)
        per_hospital: dict[str, dict] = {}
        for server_round in range(self.history.last_round + 1, cfg.rounds + 1):
            t0 = time.perf_counter()
            try:
                arrays, train_rows = self._train(server_round, arrays, ConfigRecord(dict(train_cfg)))
            except BudgetExhausted as stop:  # the privacy budget ends the run: completed, not failed
                self.privacy.stop(str(stop))
                break
            per_hospital = self._evaluate(server_round, arrays, ConfigRecord(dict(eval_cfg)))
            internal = self._internal(per_hospital)
            fed = federation_metrics(internal) if internal else {}
            fed["train-loss"] = float(np.mean([r["train-loss"] for r in train_rows])) if train_rows else float("nan")
            fed["seconds"] = time.perf_counter() - t0
            epsilon = self.privacy.round_epsilon(server_round, train_rows)
            if epsilon is not None:
                fed["epsilon"] = epsilon
            self.history.federation[server_round] = fed
            eval_rows = [{"round": server_round, "phase": "evaluate", "hospital": name,
                          **{k: v for k, v in m.items() if not k.startswith("hist-")}}
                         for name, m in per_hospital.items()]
            self.run_dir.append_metrics(train_rows + eval_rows + [
                {"round": server_round, "phase": "federation", "hospital": "all", **fed}])
            self.tracker.log_metrics(aggregator_metrics(fed, train_rows), step=server_round)
            self._checkpoint(from_arrays(arrays), server_round)
            self.history.last_round = server_round
            log.info("Round %d/%d done in %.1fs | train loss %.3f | %s | mean acc %.3f | pooled AUC %.3f",
                     server_round, cfg.rounds, fed["seconds"], fed["train-loss"],
                     " ".join(f"{n} {m['accuracy']:.2f}/{m['auc']:.2f}" for n, m in per_hospital.items()),
                     fed.get("mean-accuracy", float("nan")), fed.get("pooled-auc", float("nan")))
        final = from_arrays(arrays)
        if not per_hospital:  # resumed at the end: evaluate the final model once more
            per_hospital = self._evaluate(cfg.rounds, arrays, ConfigRecord(dict(eval_cfg)))
        self.history.final = per_hospital
        self.finish(final, per_hospital, train_cfg, time.perf_counter() - started)
        return self.history

    # -- end of run ---------------------------------------------------------------------------
    def baselines(self, train_cfg: ConfigRecord, names: Iterable[str]) -> dict[str, dict]:
        """Majority-class and local-only baselines, computed on its own data by each named hospital.

        Only the hospitals of the final evaluation are asked (the summary shows no others): with
        many clients and a sampled ``fraction_evaluate`` that keeps this phase as cheap as a round.
        """
        config = ConfigRecord({**dict(train_cfg), "baseline.rounds": self.cfg.rounds,
                               "baseline.local-only": self.cfg.baselines})
        content = RecordDict({"arrays": to_arrays(self.initial), "config": config})
        wanted = set(names)
        replies = self._send([n for n, h in self.hospitals.items() if h.name in wanted], "query.baseline", content)
        for reason in _error_reasons(replies):
            log.warning("A hospital failed to compute its baselines: %s", reason)
        return {self._name(r): metrics_of(r.content) for r in replies if not r.has_error()}

    def finish(self, final: dict[str, np.ndarray], per_hospital: dict[str, dict], train_cfg: ConfigRecord,
               seconds: float) -> None:
        pre = self.preprocessor()
        self.run_dir.save_final_model(final, {
            "model": self.cfg.model.name, "model_settings": full_spec(self.cfg.model).to_dict(),
            "pipeline": self.cfg.data.pipeline, "features": pre.feature_names,
            "preprocessing": pre.to_dict() if self.cfg.data.pipeline == "project"
            else "per-hospital standardisation (FLamby): each hospital uses its own training mean/std",
            "rounds": self.history.last_round, "strategy": self.cfg.strategy.name,
        })
        try:
            log.info("Portable model: %s", write_run_onnx(self.run_dir.path))
        except Exception as exc:  # the weights are saved: `fedheart export RUN_DIR` can write the file later
            log.warning("Could not write final_model.onnx: %s", exc)
        t0 = time.perf_counter()
        baselines = self.baselines(train_cfg, per_hospital)
        self.history.phase_seconds["baselines"] = time.perf_counter() - t0
        external = {n: m for n, m in per_hospital.items() if n not in self._internal(per_hospital)}
        table, data = summary_table(self._internal(per_hospital), baselines, self.train_rows(), external=external)
        data.update({"rounds": self.history.last_round, "seconds": seconds, "strategy": self.cfg.strategy.name,
                     "protocol": self.cfg.protocol, "aggregation": self.cfg.aggregation.mode,
                     "run_dir": str(self.run_dir.path), "phase_seconds": self.history.phase_seconds,
                     "privacy": self.privacy.summary(), "stopped_reason": self.privacy.stopped_reason})
        write_json(self.run_dir.path / "summary.json", data)
        write_text(self.run_dir.path / "summary.md",
                   f"# Run summary\n\nStrategy: {self.cfg.strategy.name}, protocol: {self.cfg.protocol}, "
                   f"rounds: {self.history.last_round}\n\n{table}\n"
                   + (f"\nStopped before round {self.history.last_round + 1}: {self.privacy.stopped_reason}\n"
                      if self.privacy.stopped_reason else ""))
        log.info("Final results after %d rounds (%.1fs), written to %s\n%s",
                 self.history.last_round, seconds, self.run_dir.path, table)
        self.tracker.close()
        try:
            log.info("Report: %s", write_report(self.run_dir.path, final=per_hospital))
        except Exception as exc:  # the results are saved; a plotting problem must not fail the run
            log.warning("Could not write the run report: %s", exc)
