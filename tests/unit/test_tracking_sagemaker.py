"""The SageMaker tracking backend: its failures (no SDK, no region, endpoint down) and, against moto in
process, what it logs for the aggregator and each hospital. The tracker interface: test_tracking.py."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.backends import get_backend
from moto.core import DEFAULT_ACCOUNT_ID

from fedheart.config import load_config
from fedheart.tracking import _hospital_tracker as hospital_tracker_cache
from fedheart.tracking import make_tracker, track_hospital, tracking_settings
from fedheart.tracking.base import TrackingError
from fedheart.tracking.sagemaker import SageMakerTracker, make_session
from launcher.flower import free_port

REGION = "eu-west-1"
EXPERIMENT = "fed-heart-disease-20261125-010203-0000000042"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fake credentials and a region; no endpoint override; no tracker left from another test."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(key, raising=False)
    hospital_tracker_cache.cache_clear()
    yield
    hospital_tracker_cache.cache_clear()


@pytest.fixture
def no_telemetry(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record every telemetry request the SDK would send."""
    import sagemaker.core.telemetry.telemetry_logging as telemetry

    sent: list[Any] = []
    monkeypatch.setattr(telemetry, "_send_telemetry_request", lambda *a, **k: sent.append(a))
    return sent


def reject_duplicate_creates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make moto refuse to create an experiment, trial or trial component that exists, as SageMaker does.

    moto overwrites the old one instead (losing its metrics), but the SDK's ``Run`` creates first and
    loads on "already exists" -- which every message of a hospital after the first one relies on.
    """
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import SageMakerModelBackend

    def strict(create: Any, key: str, store: str) -> Any:
        def create_once(self: Any, **kwargs: Any) -> Any:
            if kwargs[key] in getattr(self, store):
                raise ValidationError(message=f"Cannot create already existing resource {kwargs[key]!r}")
            return create(self, **kwargs)

        return create_once

    for method, key, store in (("create_experiment", "experiment_name", "experiments"),
                               ("create_trial", "trial_name", "trials"),
                               ("create_trial_component", "trial_component_name", "trial_components")):
        monkeypatch.setattr(SageMakerModelBackend, method, strict(getattr(SageMakerModelBackend, method), key, store))


def sagemaker_backend() -> Any:
    return get_backend("sagemaker")[DEFAULT_ACCOUNT_ID][REGION]


def steps(trial_component: str, metric: str) -> dict[int, float]:
    values = sagemaker_backend().trial_components[trial_component].metrics[metric]["Values"]
    return {int(step): float(v["Value"]) for step, v in values.items()}


def params(trial_component: str) -> dict[str, Any]:
    raw = sagemaker_backend().trial_components[trial_component].parameters
    return {k: v.get("NumberValue", v.get("StringValue")) for k, v in raw.items()}


# -- failures without an endpoint ------------------------------------------------------------------
def test_missing_sdk_gives_the_install_hint(aws_env: None, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "sagemaker.core.experiments.run", None)  # import fails
    tracker = make_tracker("sagemaker", EXPERIMENT, "aggregator", label="the aggregator")
    with caplog.at_level(logging.WARNING, logger="fedheart.tracking"):
        tracker.log_metrics({"Test:AUC": 0.8}, 1)
        tracker.flush()
    assert "pip install '.[aws]'" in caplog.text
    assert len(caplog.records) == 1


def test_no_region_is_a_clear_error(aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    tracker = make_tracker("sagemaker", EXPERIMENT, "aggregator", label="the aggregator")
    tracker.log_metrics({"Test:AUC": 0.8}, 1)
    tracker.flush()
    assert "no AWS region: set tracking.region or AWS_DEFAULT_REGION" in str(tracker.error)


def test_endpoint_down_fails_fast_once(aws_env: None, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    tracker = make_tracker("sagemaker", EXPERIMENT, "aggregator", label="the aggregator", timeout=2,
                           max_attempts=2, flush_every=1)
    with caplog.at_level(logging.WARNING, logger="fedheart.tracking"):
        t0 = time.perf_counter()
        tracker.log_metrics({"Test:AUC": 0.8}, 1)  # flush_every=1: sends (and fails) here
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for step in range(2, 20):
            tracker.log_metrics({"Test:AUC": 0.8}, step)
        tracker.close()
        later = time.perf_counter() - t0
    assert "Could not connect to the endpoint URL" in str(tracker.error)
    assert len(caplog.records) == 1 and "the aggregator" in caplog.records[0].message
    assert first < 10 and later < 0.05, (first, later)


# -- SageMaker backend against moto -------------------------------------------------------------
@mock_aws
def test_sagemaker_tracker_logs_params_and_metrics_per_step_in_batches(aws_env: None, no_telemetry: list) -> None:
    session = boto3.Session(region_name=REGION)
    batch_sizes: list[int] = []
    session.events.register("provide-client-params.sagemaker-metrics.BatchPutMetrics",
                            lambda params, **_: batch_sizes.append(len(params["MetricData"])))
    tracker = SageMakerTracker(EXPERIMENT, "aggregator", boto_session=session)
    tracker.log_params({"strategy": "fedavg", "learning-rate": 0.05, "batch-size": 16, "dp": True})
    for step in (1, 2):
        tracker.log_metrics({f"M:{i}": step * i for i in range(12)} | {"Test:AUC": math.nan}, step)
        tracker.flush()
    tracker.close()
    backend = sagemaker_backend()
    tc = f"{EXPERIMENT}-aggregator"
    assert EXPERIMENT in backend.experiments
    assert tc in backend.trial_components
    assert params(tc) == {"strategy": "fedavg", "learning-rate": 0.05, "batch-size": 16, "dp": "True"}
    assert steps(tc, "M:3") == {1: 3.0, 2: 6.0}
    assert "Test:AUC" not in backend.trial_components[tc].metrics  # NaN is not sent
    assert batch_sizes == [10, 2, 10, 2]  # BatchPutMetrics takes 1-10 metrics per call
    assert no_telemetry == []


@mock_aws
def test_flush_every_sends_after_that_many_rounds(aws_env: None, no_telemetry: list) -> None:
    tracker = SageMakerTracker(EXPERIMENT, "aggregator", flush_every=2)
    tracker.log_metrics({"Test:Loss": 0.7}, 1)
    assert f"{EXPERIMENT}-aggregator" not in sagemaker_backend().trial_components  # buffered
    tracker.log_metrics({"Test:Loss": 0.6}, 2)
    assert steps(f"{EXPERIMENT}-aggregator", "Test:Loss") == {1: 0.7, 2: 0.6}


@mock_aws
def test_track_hospital_logs_each_reply_to_the_hospital_run(aws_env: None, no_telemetry: list) -> None:
    cfg = load_config("tracking=sagemaker strategy=fedprox train.lr=0.02")
    settings = tracking_settings(cfg, EXPERIMENT)
    for rnd in (1, 2):
        config = {**settings, "server-round": rnd}
        train = {"train-loss": 0.7 - rnd / 10, "num-examples": 200.0} | ({"epsilon": 0.5 * rnd} if rnd == 2 else {})
        assert track_hospital(config, "cleveland", 200, "train", train) is None
        evaluate = {"auc": 0.8 + rnd / 100, "accuracy": 0.75, "loss": 0.5, "hist-pos": [1, 2]}
        assert track_hospital(config, "cleveland", 200, "evaluate", evaluate) is None
    tc = f"{EXPERIMENT}-client-cleveland"
    logged = params(tc)
    assert logged["hospital"] == "cleveland" and logged["train-rows"] == 200 and logged["device"] == "cpu"
    assert (logged["strategy"], logged["learning-rate"], logged["optimizer"]) == ("fedprox", 0.02, "sgd")
    assert {"batch-size", "weight-decay", "local-steps", "privacy.mode"} <= set(logged)
    assert steps(tc, "Training:Loss") == pytest.approx({1: 0.6, 2: 0.5})
    assert steps(tc, "Validation:AUC") == pytest.approx({1: 0.81, 2: 0.82})
    assert steps(tc, "Validation:Accuracy") == {1: 0.75, 2: 0.75}
    assert steps(tc, "Privacy:Epsilon") == {2: 1.0}
    assert no_telemetry == []


@mock_aws
def test_runs_of_one_hospital_in_two_processes_keep_every_value(aws_env: None, no_telemetry: list,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulation workers and deployment ClientApp processes each open the same run: nothing is lost."""
    reject_duplicate_creates(monkeypatch)
    first, second = (SageMakerTracker(EXPERIMENT, "client-va") for _ in range(2))  # one per process
    for rnd in (1, 2):
        first.log_params({"hospital": "va", "train-rows": 130})
        first.log_metrics({"Training:Loss": 0.7 / rnd}, rnd)
        first.flush()
        second.log_metrics({"Validation:AUC": 0.6 + rnd / 10}, rnd)
        second.flush()
    tc = f"{EXPERIMENT}-client-va"
    assert steps(tc, "Training:Loss") == pytest.approx({1: 0.7, 2: 0.35})
    assert steps(tc, "Validation:AUC") == pytest.approx({1: 0.7, 2: 0.8})
    assert params(tc) == {"hospital": "va", "train-rows": 130}
    assert set(sagemaker_backend().trials[f"Default-Run-Group-{EXPERIMENT}"].trial_components) == {tc}


@mock_aws
def test_no_party_needs_search_which_reads_every_partys_records(aws_env: None, no_telemetry: list,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """sagemaker:Search has no resource-level permissions, so no policy may need it (terraform/)."""
    reject_duplicate_creates(monkeypatch)
    session = boto3.Session(region_name=REGION)
    calls: list[str] = []
    session.events.register("before-call.sagemaker.*", lambda model, **_: calls.append(model.name))
    for name in ("aggregator", "client-va", "client-va"):  # the second client-va: another process
        tracker = SageMakerTracker(EXPERIMENT, name, boto_session=session)
        for rnd in (1, 2):
            tracker.log_metrics({"Training:Loss": 0.7 / rnd}, rnd)
            tracker.flush()
    assert "Search" not in calls
    assert calls.count("AssociateTrialComponent") == 2  # each trial component joins its trial once
    trial = sagemaker_backend().trials[f"Default-Run-Group-{EXPERIMENT}"]
    assert sorted(trial.trial_components) == [f"{EXPERIMENT}-aggregator", f"{EXPERIMENT}-client-va"]
    client = make_session(boto_session=session).sagemaker_client
    with pytest.raises(TrackingError, match="Search is not used"):
        client.search(Resource="ExperimentTrialComponent", SearchExpression={"Filters": []})


@mock_aws
def test_a_failed_run_does_not_break_the_next_one_in_the_process(aws_env: None, no_telemetry: list,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ray worker serves several hospitals: one hospital's failure must not switch off the others."""
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import SageMakerModelBackend

    update = SageMakerModelBackend.update_trial_component

    def failing_for_va(self: Any, **kwargs: Any) -> Any:
        if kwargs["trial_component_name"].endswith("client-va"):
            raise ValidationError(message="throttled")
        return update(self, **kwargs)

    monkeypatch.setattr(SageMakerModelBackend, "update_trial_component", failing_for_va)
    va = make_tracker("sagemaker", EXPERIMENT, "client-va", label="hospital va")
    va.log_metrics({"Validation:AUC": 0.7}, 1)
    va.flush()
    cleveland = make_tracker("sagemaker", EXPERIMENT, "client-cleveland", label="hospital cleveland")
    cleveland.log_metrics({"Validation:AUC": 0.9}, 1)
    cleveland.flush()
    assert "throttled" in str(getattr(va, "error", ""))
    assert getattr(cleveland, "error", None) is None
    assert steps(f"{EXPERIMENT}-client-cleveland", "Validation:AUC") == {1: 0.9}


def test_track_hospital_does_nothing_locally_or_after_a_failure(aws_env: None, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    local = {**tracking_settings(load_config(), EXPERIMENT), "server-round": 1}
    assert track_hospital(local, "va", 10, "train", {"train-loss": 1.0}) is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    config = {**tracking_settings(load_config("tracking=sagemaker"), EXPERIMENT), "server-round": 1}
    with caplog.at_level(logging.WARNING, logger="fedheart.tracking"):
        error = track_hospital(config, "va", 10, "train", {"train-loss": 1.0})
        # a later message in a fresh process: the SuperNode's context.state carries the error
        hospital_tracker_cache.cache_clear()
        assert track_hospital(config, "va", 10, "evaluate", {"auc": 0.5}, error=error) == error
    assert error and "Could not connect" in error
    assert len(caplog.records) == 1 and "hospital va" in caplog.records[0].message
