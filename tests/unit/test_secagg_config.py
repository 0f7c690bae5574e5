"""SecAgg+ settings: config errors before round 1, overflow checks, the quantisation bound."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_combine,
    factor_extract,
    parameters_addition,
    parameters_mod,
    parameters_multiply,
)
from flwr.common.secure_aggregation.quantization import dequantize, quantize

from fedheart.config import SECAGG_MODULUS, AggregationConfig, ConfigError, load_config
from fedheart.secagg import UpdateSettings, check_capacity, check_update, quantization_tolerance


@pytest.mark.parametrize(("overrides", "key"), [
    ("aggregation.reconstruction_threshold=5", "aggregation.reconstruction_threshold"),  # == shares
    ("aggregation.reconstruction_threshold=6", "aggregation.reconstruction_threshold"),  # > shares
    ("aggregation.reconstruction_threshold=1", "aggregation.reconstruction_threshold"),
    ("aggregation.num_shares=2 aggregation.reconstruction_threshold=1", "aggregation.num_shares"),
    ("min_hospitals=6 aggregation.num_shares=4", "aggregation.num_shares"),  # even, below the hospitals
    ("min_hospitals=1 min_replies=1", "min_hospitals"),
    ("min_hospitals=2 min_replies=2", "aggregation.reconstruction_threshold"),  # 3 shares from 2 hospitals
    ("aggregation.quantization_range=1073741824", "aggregation.quantization_range"),  # 2**30 x 4 hospitals
    ("aggregation.max_weight=0", "aggregation.max_weight"),
    ("aggregation.clipping_range=-1", "aggregation.clipping_range"),
    ("aggregation.timeout=0", "aggregation.timeout"),
    ("rounds=2 aggregation.max_failed_rounds=2", "aggregation.max_failed_rounds"),
    ("aggregation.mode=homomorphic", "aggregation.mode"),
])
def test_impossible_secagg_settings_fail_naming_the_setting(overrides: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{key}'"):
        load_config(f"aggregation=secagg {overrides}")


def test_default_secagg_settings_and_plain_mode_load() -> None:
    cfg = load_config("aggregation=secagg")
    assert cfg.aggregation.mode == "secagg" and cfg.aggregation.reconstruction_threshold < cfg.aggregation.num_shares
    assert load_config().aggregation.mode == "plain"
    # SecAgg+ limits do not apply to plain aggregation.
    assert load_config("min_hospitals=1 min_replies=1").aggregation.mode == "plain"


TRAIN_ROWS = {"cleveland": 199.0, "hungarian": 205.0, "switzerland": 107.0, "va": 155.0}


def test_capacity_accepts_the_four_hospitals_with_defaults() -> None:
    check_capacity(AggregationConfig(mode="secagg"), list(TRAIN_ROWS), TRAIN_ROWS)


def test_capacity_rejects_a_hospital_heavier_than_max_weight() -> None:
    with pytest.raises(ConfigError, match=r"'aggregation.max_weight'.*hungarian \(205\).*>= 205") as err:
        check_capacity(AggregationConfig(mode="secagg", max_weight=200.0), list(TRAIN_ROWS), TRAIN_ROWS)
    assert "cleveland" not in str(err.value)


def test_capacity_rejects_a_masked_sum_that_overflows_the_modulus() -> None:
    agg = AggregationConfig(mode="secagg", quantization_range=2**22)
    many = [f"h{i}" for i in range(SECAGG_MODULUS // 2**22)]  # 1024 hospitals x 2**22 levels
    with pytest.raises(ConfigError, match=r"'aggregation.quantization_range'.*1024 hospitals"):
        check_capacity(agg, many)
    check_capacity(agg, many[:1000])


def test_capacity_rejects_an_even_share_count_below_the_hospitals() -> None:
    agg = AggregationConfig(mode="secagg", num_shares=4)
    check_capacity(agg, list(TRAIN_ROWS))  # 4 shares among 4 hospitals: everyone is a neighbour
    with pytest.raises(ConfigError, match=r"'aggregation.num_shares'.*16 hospitals.*e\.g\. 5"):
        check_capacity(agg, [f"h{i}" for i in range(16)])


def test_capacity_needs_two_hospitals() -> None:
    with pytest.raises(ConfigError, match="'min_hospitals'"):
        check_capacity(AggregationConfig(mode="secagg"), ["va"], {"va": 155.0})


def secure_average(agg: AggregationConfig, updates: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Flower's SecAgg+ arithmetic, stage by stage (the masks, which cancel mod 2**32, left out)."""
    q, c = agg.quantization_range, agg.clipping_range
    total = None
    for x, w in zip(updates, weights, strict=True):  # client: secaggplus_mod._collect_masked_vectors
        q_ratio = round(w / agg.max_weight * q)
        quantized = quantize(parameters_multiply([x], q_ratio / q), c, q)
        vec = [v.astype(np.int64) for v in factor_combine(q_ratio, quantized)]  # int64, as the added masks are
        total = vec if total is None else parameters_addition(total, vec)
    q_total, summed = factor_extract(parameters_mod(total, SECAGG_MODULUS))  # server: unmask_stage
    [vec] = dequantize(summed, c, q)
    return (vec - (len(updates) - 1) * c) * (q / q_total)


@pytest.mark.parametrize("hospitals", [2, 4, 16])
def test_quantization_tolerance_bounds_flowers_secagg_arithmetic(hospitals: int) -> None:
    rng = np.random.default_rng(hospitals)
    agg = AggregationConfig(mode="secagg", clipping_range=4.0, quantization_range=2**16, max_weight=500.0)
    worst = 0.0
    for _ in range(20):
        weights = [float(w) for w in rng.integers(20, 500, hospitals)]
        updates = [rng.uniform(-agg.clipping_range, agg.clipping_range, 2000) for _ in range(hospitals)]
        exact = np.average(updates, axis=0, weights=weights)
        error = float(np.max(np.abs(secure_average(agg, updates, weights) - exact)))
        tol = quantization_tolerance(agg, weights)
        assert error <= tol
        worst = max(worst, error / tol)
    assert worst > 0.05  # the bound is not loose by orders of magnitude


def test_a_hospital_refuses_an_overweight_or_out_of_range_update() -> None:
    settings = UpdateSettings(("w",), "num-examples", clipping_range=1.0, max_weight=100.0)
    check_update(settings, {"w": np.array([1.9])}, weight=50.0)  # 1.9 x 50/100 = 0.95: fits
    with pytest.raises(ValueError, match=r"aggregation\.clipping_range=1"):
        check_update(settings, {"w": np.array([2.1])}, weight=50.0)
    with pytest.raises(ValueError, match=r"exceeds aggregation\.max_weight=100"):
        check_update(settings, {"w": np.array([0.1])}, weight=101.0)
    with pytest.raises(ValueError, match=r"aggregation\.clipping_range"):
        check_update(settings, {"w": np.array([np.nan])}, weight=1.0)


def test_update_settings_travel_as_flat_config() -> None:
    settings = UpdateSettings(("linear.weight", "linear.bias"), "num-examples", 8.0, 1000.0)
    assert UpdateSettings.from_config(settings.to_config()) == settings
    with pytest.raises(ValueError, match=r"secagg\.array-keys"):
        UpdateSettings.from_config({})
