"""SageMaker naming rules, checked in our code (moto accepts any name)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fedheart.config import ConfigError, load_config
from fedheart.tracking.names import (
    MAX_NAME,
    MAX_PART,
    MAX_PREFIX,
    TrackingNameError,
    check_name,
    check_prefix,
    experiment_name,
    hospital_run_name,
    trial_component_name,
)

WHEN = datetime(2026, 11, 25, 1, 2, 3, tzinfo=UTC)


@pytest.mark.parametrize("name", ["a", "fed-heart-disease", "a--b", "x" * MAX_NAME, "0abc9"])
def test_valid_names_pass(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(("name", "rule"), [
    ("", "1 to 120"), ("x" * (MAX_NAME + 1), "1 to 120"), ("Fed-Heart", "a-z, 0-9"), ("fed_heart", "a-z, 0-9"),
    ("-fed", "start and end"), ("fed-", "start and end"), ("fed heart", "a-z, 0-9"), ("fed.heart", "a-z, 0-9"),
])
def test_invalid_names_are_refused_with_the_rule(name: str, rule: str) -> None:
    with pytest.raises(TrackingNameError, match=rule):
        check_name(name)


def test_experiment_name_is_prefixed_unique_and_valid() -> None:
    name = experiment_name("fed-heart-disease", 1234567890123456789, WHEN)
    assert name == "fed-heart-disease-20261125-010203-0123456789"
    assert name != experiment_name("fed-heart-disease", 1234567890123456788, WHEN)
    assert name != experiment_name("fed-heart-disease", 1234567890123456789, WHEN.replace(second=4))


def test_longest_prefix_and_hospital_still_fit_every_limit() -> None:
    experiment = experiment_name("p" * MAX_PREFIX, 2**64 - 1, WHEN)
    run = hospital_run_name("h" * 500)
    assert len(experiment) <= MAX_PART and len(run) <= MAX_PART
    assert len(trial_component_name(experiment, run)) <= MAX_NAME
    with pytest.raises(TrackingNameError, match="experiment prefix"):
        check_prefix("p" * (MAX_PREFIX + 1))


@pytest.mark.parametrize(("hospital", "run"), [
    ("cleveland", "client-cleveland"), ("Processed.Hungarian", "client-processed-hungarian"),
    ("St. Mary's  (Zürich)", "client-st-mary-s-z-rich"), ("__", "client-unnamed"),
])
def test_hospital_run_names_are_slugged(hospital: str, run: str) -> None:
    assert hospital_run_name(hospital) == run


def test_trial_component_name_is_checked() -> None:
    assert trial_component_name("exp-1", "aggregator") == "exp-1-aggregator"
    with pytest.raises(TrackingNameError, match="experiment name"):
        trial_component_name("Exp", "aggregator")
    with pytest.raises(TrackingNameError, match="run name"):
        trial_component_name("exp", "r" * (MAX_PART + 1))


def test_config_checks_tracking_settings() -> None:
    cfg = load_config("tracking=sagemaker")
    assert (cfg.tracking.backend, cfg.tracking.experiment_prefix, cfg.tracking.region) == \
        ("sagemaker", "fed-heart-disease", None)
    assert load_config().tracking.backend == "local"
    with pytest.raises(ConfigError, match=r"tracking\.experiment_prefix.*a-z"):
        load_config("tracking=sagemaker tracking.experiment_prefix=Fed_Heart")
    with pytest.raises(ConfigError, match=r"tracking\.backend.*local, sagemaker"):
        load_config("tracking.backend=mlflow")
    with pytest.raises(ConfigError, match=r"tracking\.flush_every"):
        load_config("tracking=sagemaker tracking.flush_every=0")
