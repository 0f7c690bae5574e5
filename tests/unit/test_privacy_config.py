"""Privacy switches: config checks, strategy wrappers, the server's budget handling, the client mod."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
)
from flwr.supercore.task_identity import TaskIdentity

from client_app.privacy import central_dp_mod
from fedheart.config import ConfigError, load_config
from fedheart.privacy import EPSILON, EXHAUSTED
from fedheart.protocol import EQUAL_WEIGHT, parse_privacy, privacy_settings, task_settings
from server_app.privacy import BudgetExhausted, PrivacyMonitor
from server_app.strategies import build_strategy


@pytest.fixture
def task_identity() -> Iterator[None]:
    """Flower messages need a task identity (a running app sets it)."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def test_dp_sgd_group_sets_privacy_and_its_tuned_training_defaults() -> None:
    cfg = load_config(["privacy=dp-sgd"])
    assert cfg.privacy.mode == "dp-sgd" and cfg.privacy.epsilon == 1.0 and cfg.privacy.noise_multiplier is None
    assert load_config(["privacy=dp-sgd", "train.lr=0.3"]).train.lr == 0.3  # overrides still win
    settings = {**task_settings(cfg), **privacy_settings(cfg, 1e-5)}
    dp = parse_privacy(settings)
    assert dp is not None and dp.epsilon == 1.0 and dp.noise_multiplier is None and dp.delta == 1e-5
    assert dp.rounds == cfg.rounds and dp.noise_seed is None
    assert parse_privacy(task_settings(load_config([]))) is None


@pytest.mark.parametrize(("overrides", "key"), [
    (["privacy=dp-sgd", "privacy.epsilon=null"], "privacy.epsilon"),
    (["privacy=dp-sgd", "privacy.delta=1.5"], "privacy.delta"),
    (["privacy=dp-sgd", "protocol=flamby"], "data.pipeline"),
    (["privacy=dp-sgd", "strategy=fedprox"], "strategy.name"),
    (["privacy=dp-sgd", "resume=/tmp/run"], "resume"),
    (["privacy=central-fixed", "aggregation=secagg"], "privacy.clipping"),
    (["privacy=central-fixed", "privacy.clipping=client", "aggregation=secagg", "privacy.epsilon=5"],
     "privacy.epsilon"),
    (["privacy=dp-sgd", "privacy.max_grad_norm=0"], "privacy.max_grad_norm"),
    (["privacy.mode=local"], "privacy.mode"),
    (["privacy=central-fixed", "privacy.noise_multiplier=null"], "privacy.noise_multiplier"),
    (["privacy=central-fixed", "privacy.clipping=both"], "privacy.clipping"),
    (["privacy=central-fixed", "strategy=fedadam"], "strategy.name"),
    (["privacy=central-fixed", "strategy.params.fraction_train=0.5"], "strategy.params.fraction_train"),
    (["privacy=central-adaptive", "privacy.epsilon=1"], "privacy.epsilon"),
])
def test_wrong_privacy_settings_name_the_key(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides)


def test_dp_combines_with_secure_aggregation_where_it_can() -> None:
    assert load_config(["privacy=dp-sgd", "aggregation=secagg"]).privacy.mode == "dp-sgd"
    assert load_config(["privacy=central-adaptive", "privacy.clipping=client", "aggregation=secagg",
                        "aggregation.max_weight=1"]).aggregation.mode == "secagg"


@pytest.mark.parametrize(("overrides", "wrapper", "accounted"), [
    (["privacy=central-fixed"], DifferentialPrivacyServerSideFixedClipping, True),
    (["privacy=central-fixed", "privacy.clipping=client"], DifferentialPrivacyClientSideFixedClipping, True),
    (["privacy=central-adaptive"], DifferentialPrivacyServerSideAdaptiveClipping, False),
    (["privacy=central-adaptive", "privacy.clipping=client"], DifferentialPrivacyClientSideAdaptiveClipping, False),
])
def test_central_modes_wrap_the_strategy_with_equal_weights(overrides, wrapper, accounted) -> None:
    strategy = build_strategy(load_config(overrides))
    assert type(strategy) is wrapper
    assert strategy.strategy.weighted_by_key == EQUAL_WEIGHT
    assert (getattr(strategy, "accountant", None) is not None) == accounted


def test_adaptive_noise_that_flower_rejects_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="central-adaptive"):
        build_strategy(load_config(["privacy=central-adaptive", "privacy.clipped_count_stddev=null",
                                    "privacy.noise_multiplier=1.0"]))


def test_delta_defaults_to_1e5_or_below_one_over_the_smallest_hospital_and_is_checked() -> None:
    monitor = PrivacyMonitor(load_config(["privacy=dp-sgd"]), strategy=None)  # type: ignore[arg-type]
    assert monitor.start({"a": 200, "b": 80})["privacy.delta"] == pytest.approx(1e-5)
    tiny = PrivacyMonitor(load_config(["privacy=dp-sgd"]), strategy=None)  # type: ignore[arg-type]
    assert tiny.start({"a": 200, "b": 20_000})["privacy.delta"] == pytest.approx(1e-5)
    assert tiny.start({"a": 2_000_000, "b": 500_000})["privacy.delta"] == pytest.approx(0.1 / 500_000)
    strict = PrivacyMonitor(load_config(["privacy=dp-sgd", "privacy.delta=0.02"]), strategy=None)  # type: ignore
    with pytest.raises(ConfigError, match=r"privacy\.delta.*1 / 80"):
        strict.start({"a": 200, "b": 80})


def _reply(epsilon: float, exhausted: bool) -> Message:
    content = RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(2))}),
                          "metrics": MetricRecord({EPSILON: epsilon, EXHAUSTED: float(exhausted)})})
    return Message(content, dst_node_id=1, message_type="train")


def test_spent_hospitals_are_left_out_and_too_few_end_the_run(task_identity: None) -> None:
    monitor = PrivacyMonitor(load_config(["privacy=dp-sgd", "min_replies=2"]), strategy=None)  # type: ignore
    replies = [_reply(0.5, False), _reply(0.9, True), _reply(0.4, False)]
    kept = monitor.trainable(3, replies, lambda r: "h")
    assert kept == [replies[0], replies[2]]
    with pytest.raises(BudgetExhausted, match="only 1 hospital"):
        monitor.trainable(4, [_reply(0.5, False), _reply(0.9, True), _reply(0.9, True)], lambda r: "h")
    rows = [{"hospital": "a", EPSILON: 0.5}, {"hospital": "b", EPSILON: 0.9}]
    assert monitor.round_epsilon(4, rows) == 0.9


def _train_message(mode: str, clipping: str) -> Message:
    config = ConfigRecord({"privacy.mode": mode, "privacy.clipping": clipping, "clipping_norm": 1.0})
    return Message(RecordDict({"arrays": ArrayRecord({"w": Array(np.zeros(4))}), "config": config}),
                   dst_node_id=1, message_type="train")


def _trained(msg: Message, context: Context) -> Message:
    arrays = ArrayRecord({"w": Array(np.full(4, 3.0))})  # an update of norm 6
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 10.0})}), reply_to=msg)


@pytest.mark.parametrize(("mode", "clipping", "norm"), [
    ("central-fixed", "client", 1.0), ("central-adaptive", "client", 1.0), ("central-fixed", "server", 6.0),
    ("none", "server", 6.0)])
def test_central_mod_clips_on_the_client_only_when_configured(task_identity: None, mode, clipping, norm) -> None:
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    reply = central_dp_mod(_train_message(mode, clipping), context, _trained)
    assert not reply.has_error(), reply.error if reply.has_error() else ""
    update = reply.content["arrays"]["w"].numpy()
    assert np.linalg.norm(update) == pytest.approx(norm, rel=1e-6)
    metrics = reply.content["metrics"]
    assert (EQUAL_WEIGHT in metrics) == (mode != "none")
    assert ("norm_bit" in metrics) == (mode == "central-adaptive")
