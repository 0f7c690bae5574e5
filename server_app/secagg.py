"""SecAgg+ training rounds (``aggregation=secagg``) on Flower 1.42's legacy workflow path.

Flower 1.42 has SecAgg+ only as a legacy workflow: ``SecAggPlusWorkflow`` on a ``LegacyContext``
whose ``flwr.server.strategy`` strategy configures and aggregates ``FitIns``/``FitRes``. Here that
workflow is the training step (:class:`SecAggTraining`) of the same ``Federation`` (statistics,
per-hospital metrics, checkpoints, resume, baselines and summary stay shared). The configured Message-API strategy,
DP wrapper included, still decides what to send and aggregates: :class:`StrategyBridge` is the
legacy face the workflow needs, and hands the strategy the securely summed update as every
hospital's reply (the weighted mean of identical arrays is that sum).

Flower only logs ``Secure aggregation halted.``; :class:`ReportingSecAggPlus` records how each
round ended and :class:`HaltedRounds` fails the run after ``aggregation.max_failed_rounds``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.common import FitIns, FitRes, Parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig, SimpleClientManager
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedheart.config import SECAGG_MODULUS, AppConfig
from fedheart.secagg import UpdateSettings, check_capacity, quantization_tolerance
from server_app.errors import FederationError
from server_app.records import metrics_of

if TYPE_CHECKING:
    from server_app.federation import Federation

log = logging.getLogger("fedheart.server")

DROPPED = 1  # Error code of the stand-in reply for a hospital that dropped out of a SecAgg+ round


@dataclass
class SecAggOutcome:
    """How one round of SecAgg+ ended."""

    completed: bool
    stage: str  # the last stage run: "unmask" when completed, else where it halted
    sampled: int  # hospitals asked to take part
    active: int  # hospitals still taking part after that stage
    errors: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {"status": "completed" if self.completed else "halted", "stage": self.stage,
                "sampled": self.sampled, "active": self.active, "errors": self.errors}

    def describe(self) -> str:
        errors = "; ".join(self.errors) or "none (timed out or too few replies)"
        return (f"SecAgg+ halted at stage '{self.stage}' with {self.active} of {self.sampled} hospitals "
                f"still taking part; hospital errors: {errors}")


def _reason(failure: BaseException) -> str:
    error = failure.args[0] if failure.args else failure
    return str(getattr(error, "reason", None) or error)


class ReportingSecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, which also records how the round ended in ``outcome``."""

    outcome: SecAggOutcome | None = None

    def __call__(self, grid: Grid, context: Context) -> None:
        """Flower's four stages in order (as ``SecAggPlusWorkflow.__call__``), stopping at a halt."""
        if not isinstance(context, LegacyContext):
            raise TypeError(f"SecAgg+ needs a LegacyContext, got {type(context).__name__}")
        state = WorkflowState()
        stages = ((Stage.SETUP, self.setup_stage), (Stage.SHARE_KEYS, self.share_keys_stage),
                  (Stage.COLLECT_MASKED_VECTORS, self.collect_masked_vectors_stage), (Stage.UNMASK, self.unmask_stage))
        completed, name = False, Stage.SETUP
        for name, run_stage in stages:  # noqa: B007 (``name`` is the stage reached)
            completed = run_stage(grid, context, state)
            if not completed:
                break
        self.outcome = SecAggOutcome(completed, name, len(state.sampled_node_ids), len(state.active_node_ids),
                                     [_reason(f) for f in state.failures])


class HaltedRounds:
    """Rounds whose SecAgg+ halted; the run fails when there are more than ``limit``."""

    def __init__(self, limit: int, earlier: Iterable[int] = ()) -> None:
        self.limit = limit
        self.rounds = sorted(set(earlier))

    def record(self, server_round: int, outcome: SecAggOutcome) -> None:
        """Log the halted round as failed; raise FederationError once too many have halted."""
        self.rounds.append(server_round)
        log.error("Round %d FAILED: %s; the global model is unchanged (%d halted round(s), "
                  "aggregation.max_failed_rounds=%d)", server_round, outcome.describe(), len(self.rounds), self.limit)
        if len(self.rounds) > self.limit:
            raise FederationError(
                f"secure aggregation failed in {len(self.rounds)} round(s) {self.rounds}, more than "
                f"aggregation.max_failed_rounds={self.limit}; round {server_round}: {outcome.describe()}")


def _weight_key(strategy: Strategy) -> str:
    """The reply metric that weights updates, looking through DP and other wrappers."""
    inner: Any = strategy
    while not hasattr(inner, "weighted_by_key") and hasattr(inner, "strategy"):
        inner = inner.strategy
    return str(getattr(inner, "weighted_by_key", "num-examples"))


class StrategyBridge(LegacyStrategy):
    """The legacy ``Strategy`` that SecAggPlusWorkflow drives, backed by our Message-API strategy.

    ``configure_fit`` turns the strategy's train messages into ``FitIns`` (plus the names of the
    arrays, the weight key and the SecAgg+ ranges each hospital checks). ``aggregate_fit`` only
    keeps the securely aggregated arrays as one reply per contributing hospital (its own metrics
    attached), and a stand-in error reply per hospital that dropped out, for the federation to
    aggregate exactly as it aggregates plain replies.
    """

    def __init__(self, strategy: Strategy, grid: Grid, run_id: int, arrays: ArrayRecord, config: ConfigRecord,
                 clipping_range: float, max_weight: float, shared: tuple[str, ...] = ()) -> None:
        self.strategy, self.grid, self.run_id = strategy, grid, run_id
        self.arrays, self.config = arrays, config
        keys = tuple(arrays.keys())
        self.settings = UpdateSettings(keys, _weight_key(strategy), clipping_range, max_weight,
                                       reply_keys=shared if shared and shared != keys else ())
        self.instructions: dict[int, Message] = {}
        self.replies: list[Message] | None = None

    def configure_fit(self, server_round: int, parameters: Parameters,
                      client_manager: ClientManager) -> list[tuple[ClientProxy, FitIns]]:
        pairs: list[tuple[ClientProxy, FitIns]] = []
        for msg in self.strategy.configure_train(server_round, self.arrays, self.config, self.grid):
            node_id = msg.metadata.dst_node_id
            proxy = GridClientProxy(node_id, self.grid, self.run_id)
            client_manager.register(proxy)
            arrays = next(iter(msg.content.array_records.values()))
            config = dict(next(iter(msg.content.config_records.values())))
            fitins = FitIns(compat.arrayrecord_to_parameters(arrays, keep_input=True),
                            {**config, **self.settings.to_config()})
            self.instructions[node_id] = msg
            pairs.append((proxy, fitins))
        return pairs

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list[tuple[ClientProxy, FitRes] | BaseException]
                      ) -> tuple[Parameters | None, dict[str, Any]]:
        replies: list[Message] = []
        for proxy, fitres in results:
            aggregate = parameters_to_ndarrays(fitres.parameters)
            arrays = ArrayRecord({k: Array(np.asarray(v, dtype=self.arrays[k].dtype))
                                  for k, v in zip(self.settings.returned, aggregate, strict=True)})
            content = RecordDict({"arrays": arrays, "metrics": MetricRecord(dict(fitres.metrics))})
            replies.append(Message(content, reply_to=self.instructions[int(proxy.node_id)]))
        contributed = {int(proxy.node_id) for proxy, _ in results}
        errors = "; ".join(_reason(f) for f in failures if isinstance(f, BaseException))
        for node_id, msg in self.instructions.items():
            if node_id not in contributed:
                replies.append(Message(Error(DROPPED, f"dropped out of the SecAgg+ round ({errors or 'no reply'})"),
                                       reply_to=msg))
        self.replies = replies
        return None, {}  # the federation aggregates ``replies`` with the configured strategy

    # Not used by SecAggPlusWorkflow: the federation evaluates through the Message API.
    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_evaluate(self, server_round: int, parameters: Parameters,
                           client_manager: ClientManager) -> list:
        return []

    def aggregate_evaluate(self, server_round: int, results: list, failures: list) -> tuple[None, dict]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> None:
        return None


class SecAggTraining:
    """The training step of ``aggregation=secagg``: Flower's SecAgg+ workflow (the rest of the run as
    the plain one: ``server_app.training``)."""

    def __init__(self, cfg: AppConfig) -> None:
        a = cfg.aggregation
        self.workflow = ReportingSecAggPlus(
            a.num_shares, a.reconstruction_threshold, max_weight=a.max_weight, clipping_range=a.clipping_range,
            quantization_range=a.quantization_range, modulus_range=SECAGG_MODULUS,
            timeout=a.timeout or cfg.round_timeout)
        self.halted: HaltedRounds | None = None

    def after_statistics(self, federation: Federation) -> None:
        """The SecAgg+ capacity check on the hospitals' training rows."""
        a = federation.cfg.aggregation
        rows = {h.name: float(h.train_rows) for h in federation.hospitals.values()}
        by_rows = _weight_key(federation.strategy) == "num-examples"  # else (e.g. equal DP weights) hospitals check
        check_capacity(a, list(rows), rows if by_rows else None)
        bound = f"; quantisation error <= {quantization_tolerance(a, list(rows.values())):.2g}" if by_rows else ""
        log.info("SecAgg+ on: %d hospitals, %d shares, threshold %d%s", len(rows), a.num_shares,
                 a.reconstruction_threshold, bound)

    def train(self, federation: Federation, server_round: int, arrays: Any,
              config: ConfigRecord) -> tuple[Any, list[dict]]:
        cfg, run_dir = federation.cfg, federation.run_dir
        if self.halted is None:  # counts rounds that halted before a resume, too
            self.halted = HaltedRounds(cfg.aggregation.max_failed_rounds, [
                int(r["round"]) for r in run_dir.read_metrics()
                if r.get("phase") == "secagg" and r.get("status") == "halted"])
        federation.await_hospitals(server_round, "train")
        started = time.perf_counter()
        a = cfg.aggregation
        bridge = StrategyBridge(federation.strategy, federation.grid, federation.run_id, arrays, config,
                                a.clipping_range, a.max_weight, tuple(federation.shared_keys(arrays.keys())))
        base = Context(run_id=federation.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={})
        context = LegacyContext(base, config=ServerConfig(num_rounds=cfg.rounds), strategy=bridge,
                                client_manager=SimpleClientManager())
        context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: server_round})
        context.state.array_records[MAIN_PARAMS_RECORD] = arrays
        self.workflow(federation.grid, context)
        outcome = self.workflow.outcome
        assert outcome is not None
        row = {"round": server_round, "phase": "secagg", "hospital": "all",
               "seconds": time.perf_counter() - started, **outcome.row()}
        if not outcome.completed or bridge.replies is None:
            run_dir.append_metrics([row])
            self.halted.record(server_round, outcome)
            return arrays, []
        key = bridge.settings.weight_key
        weights = [float(metrics_of(r.content)[key]) for r in bridge.replies if not r.has_error()]
        if weights:
            row["error-bound"] = quantization_tolerance(a, weights)  # largest quantisation error per value
        run_dir.append_metrics([row])
        return federation.aggregate_train(server_round, arrays, bridge.replies)
