"""SecAgg+ arithmetic and the settings both apps share (plain Python, no Flower).

Flower's SecAgg+ scales a hospital's update by ``weight / max_weight``, clips every value to
``±clipping_range``, quantises it to ``quantization_range`` levels (stochastic rounding) and sums
the masked vectors modulo ``2**32``; the server divides the unmasked sum by the summed weights.
These functions check, before round 1 and on each hospital, that nothing overflows or gets
clipped, and bound how far the result can be from the exact weighted average.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedheart.config import SECAGG_MODULUS, AggregationConfig, ConfigError

# Keys the server adds to the (legacy) FitIns config of a SecAgg+ round.
ARRAY_KEYS = "secagg.array-keys"  # JSON list: names of the model's arrays, in the order sent
WEIGHT_KEY = "secagg.weight-key"  # reply metric that weights the update (the strategy's weighted_by_key)
CLIPPING_RANGE = "secagg.clipping-range"
MAX_WEIGHT = "secagg.max-weight"
REPLY_KEYS = "secagg.reply-keys"  # JSON list: the arrays a contribution holds, when not all of them
PREFIX = "secagg."


@dataclass(frozen=True)
class UpdateSettings:
    """What a hospital needs to turn its trained weights into a SecAgg+ contribution."""

    array_keys: tuple[str, ...]
    weight_key: str
    clipping_range: float
    max_weight: float
    reply_keys: tuple[str, ...] = ()  # the arrays a hospital masks and returns (personalisation: the shared ones)

    @property
    def returned(self) -> tuple[str, ...]:
        """The arrays of a contribution, in order: ``reply_keys``, or every array sent."""
        return self.reply_keys or self.array_keys

    def to_config(self) -> dict[str, str | float]:
        out: dict[str, str | float] = {ARRAY_KEYS: json.dumps(list(self.array_keys)), WEIGHT_KEY: self.weight_key,
                                       CLIPPING_RANGE: float(self.clipping_range), MAX_WEIGHT: float(self.max_weight)}
        if self.reply_keys:
            out[REPLY_KEYS] = json.dumps(list(self.reply_keys))
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> UpdateSettings:
        missing = [k for k in (ARRAY_KEYS, WEIGHT_KEY, CLIPPING_RANGE, MAX_WEIGHT) if k not in config]
        if missing:
            raise ValueError(f"SecAgg+ train message lacks {', '.join(missing)} in its config: "
                             "the server and this hospital run different app versions")
        return cls(tuple(json.loads(str(config[ARRAY_KEYS]))), str(config[WEIGHT_KEY]),
                   float(config[CLIPPING_RANGE]), float(config[MAX_WEIGHT]),
                   tuple(json.loads(str(config.get(REPLY_KEYS, "[]")))))


def check_capacity(agg: AggregationConfig, hospitals: Sequence[str],
                   weights: Mapping[str, float] | None = None) -> None:
    """Raise ConfigError if SecAgg+ over these hospitals would overflow or cannot run.

    ``weights``: each hospital's weight in the average (e.g. training rows), when known before
    round 1. An update is scaled by ``weight / max_weight``: a ratio above 1 can push values past
    the clipping range, so every weight must be <= ``max_weight`` (unknown weights are checked by
    each hospital instead). The masked sum of ``n`` quantised vectors (each value in
    ``[0, quantization_range]``) and of the quantised ratios must stay below the modulus ``2**32``.
    An even ``num_shares`` below the number of hospitals hits a Flower 1.42 bug (shares < neighbours).
    """
    n = len(hospitals)
    if n < 2:
        raise ConfigError(f"invalid value for 'min_hospitals': secure aggregation needs at least 2 hospitals, "
                          f"{n} reported")
    if agg.num_shares % 2 == 0 and agg.num_shares < n:
        raise ConfigError(
            f"invalid value for 'aggregation.num_shares': {agg.num_shares} is even and below the {n} hospitals; "
            f"Flower 1.42 then gives each hospital {agg.num_shares + 1} neighbours but only {agg.num_shares} shares "
            f"and every round fails: use an odd number (e.g. {agg.num_shares + 1})")
    over = {name: w for name, w in (weights or {}).items() if w > agg.max_weight}
    if over:
        raise ConfigError(
            f"invalid value for 'aggregation.max_weight': {agg.max_weight:g} is below the weight (training "
            f"examples) of {', '.join(f'{h} ({w:g})' for h, w in sorted(over.items()))}; SecAgg+ scales an "
            f"update by num_examples/max_weight, which must not exceed 1 (overflow); set aggregation.max_weight "
            f">= {max(over.values()):g}")
    if n * agg.quantization_range + n >= SECAGG_MODULUS:  # each ratio <= 1, so the ratios sum to <= n too
        raise ConfigError(
            f"invalid value for 'aggregation.quantization_range': {agg.quantization_range} levels x {n} hospitals "
            f"overflow the SecAgg+ modulus 2**32; use at most {(SECAGG_MODULUS - n - 1) // n}")


def quantization_tolerance(agg: AggregationConfig, weights: Sequence[float]) -> float:
    """Largest difference, per value, between the SecAgg+ aggregate and the exact weighted average.

    With ``C = clipping_range``, ``Q = quantization_range``, ``n`` hospitals and ratios
    ``r_i = w_i / max_weight``: stochastic rounding moves each hospital's scaled value by less
    than one level ``2C/Q``, so the sum by less than ``n·2C/Q``; rounding each ratio to a multiple
    of ``1/Q`` moves the weighted mean of values in ``[-C, C]`` by at most ``n·C/Q / Σr_i``.
    The server divides the sum by ``Σr_i``: the bound is ``3·n·C / (Q·Σr_i)``.
    """
    total_ratio = sum(weights) / agg.max_weight
    return 3 * len(weights) * agg.clipping_range / (agg.quantization_range * total_ratio)


def check_update(settings: UpdateSettings, arrays: Mapping[str, np.ndarray], weight: float) -> None:
    """On a hospital: refuse a contribution SecAgg+ would distort (ValueError naming the setting)."""
    if weight > settings.max_weight:
        raise ValueError(f"this hospital's weight ({settings.weight_key}={weight:g}) exceeds "
                         f"aggregation.max_weight={settings.max_weight:g}; SecAgg+ would overflow: raise "
                         "aggregation.max_weight")
    scale = weight / settings.max_weight
    largest = max((float(np.max(np.abs(a))) for a in arrays.values() if np.size(a)), default=0.0)
    if not np.isfinite(largest) or largest * scale > settings.clipping_range:
        raise ValueError(f"this hospital's update has a value outside ±aggregation.clipping_range="
                         f"{settings.clipping_range:g} after scaling by {settings.weight_key}/max_weight; "
                         "SecAgg+ would clip it silently: raise aggregation.clipping_range")
