"""Every privacy mode through a real Flower simulation (short runs: 2 rounds x 10 local steps)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from flwr.serverapp import GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod
from opacus.accountants import RDPAccountant

from fedheart.config import load_config
from fedheart.hospital import load_hospital
from fedheart.schema import hospital

pytestmark = pytest.mark.e2e

SHORT = ["rounds=2", "train.local_steps=10", "baselines=false"]


def rows(run_dir: Path, phase: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["phase"] == phase]


def opacus_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    acc = RDPAccountant()
    acc.history = history
    return float(acc.get_epsilon(delta))


def sample_rates(data_dir: Path, batch_size: int) -> dict[str, float]:
    """Each hospital's Poisson rate as Opacus sets it: 1 / (batches per epoch) of its training rows."""
    out = {}
    for key in load_config([]).data.hospitals:
        data = load_hospital(data_dir / hospital(key).filename, seed=43, pipeline="project", name=key)
        out[key] = 1 / math.ceil(len(data.y_train) / batch_size)
    return out


def test_dp_sgd_fixed_noise_reports_opacus_epsilon_and_stops_at_the_budget(simulation, data_dir) -> None:
    delta, noise, stats_noise, steps = 1e-4, 1.0, 20.0, 10
    q = sample_rates(data_dir, 16)
    one = {h: opacus_epsilon([(stats_noise, 1.0, 1), (noise, rate, steps)], delta) for h, rate in q.items()}
    two = {h: opacus_epsilon([(stats_noise, 1.0, 1), (noise, rate, 2 * steps)], delta) for h, rate in q.items()}
    budget = (max(one.values()) + max(two.values())) / 2  # every hospital fits round 1, one does not fit round 2
    assert budget < max(two.values())
    run = simulation.run("privacy=dp-sgd", f"privacy.noise_multiplier={noise}", f"privacy.epsilon={budget}",
                         f"privacy.delta={delta}", f"privacy.stats_noise_multiplier={stats_noise}",
                         "train.batch_size=16", "rounds=3", "min_replies=4", f"train.local_steps={steps}",
                         "baselines=false")
    assert run.status == "finished:completed", run.record.get("status-details")
    summary = run.summary
    assert summary["rounds"] == 1
    assert "privacy budget spent" in summary["stopped_reason"]
    train = rows(run.run_dir, "train")
    assert {r["round"] for r in train} == {1}
    for r in train:  # the app's epsilon is Opacus' for the same noise, rate and steps (stats release included)
        assert r["epsilon"] == pytest.approx(one[r["hospital"]], rel=1e-9)
        assert r["epsilon"] <= budget and r["budget-exhausted"] == 0
    federation = rows(run.run_dir, "federation")
    assert federation[0]["epsilon"] == pytest.approx(max(one.values()), rel=1e-9)
    assert summary["privacy"]["epsilon"] <= budget and summary["privacy"]["delta"] == delta


def test_dp_sgd_target_epsilon_is_spent_by_the_last_round(simulation) -> None:
    run = simulation.run("privacy=dp-sgd", "privacy.epsilon=2.0", *SHORT)
    assert run.status == "finished:completed", run.record.get("status-details")
    summary = run.summary
    assert summary["rounds"] == 2 and summary["stopped_reason"] is None
    last = [r for r in rows(run.run_dir, "train") if r["round"] == 2]
    assert len(last) == 4
    for r in last:
        assert 2.0 - 0.011 <= r["epsilon"] <= 2.0
        assert r["train-loss"] is None  # not released under DP
    assert summary["privacy"]["delta"] < 1 / max(h["train-rows"] for h in summary["hospitals"].values())
    assert all(h["majority-accuracy"] is None for h in summary["hospitals"].values())  # no non-DP baseline


@pytest.mark.parametrize("overrides", [
    ["privacy=central-fixed", "privacy.clipping=server"],
    ["privacy=central-fixed", "privacy.clipping=client"],
])
def test_central_fixed_clipping_runs_and_accounts_with_flower(simulation, overrides: list[str]) -> None:
    run = simulation.run(*overrides, *SHORT)
    assert run.status == "finished:completed", run.record.get("status-details")
    cfg = load_config(overrides)
    accountant = RdpAccountant(PrivacyConfig(
        target_delta=0.1 / 4, population_size=4, neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION))
    accountant.compose(GaussianPrivacyEvent(noise_multiplier=cfg.privacy.noise_multiplier, sample_size=4,
                                            population_size=4), count=2)
    assert run.summary["privacy"]["epsilon"] == pytest.approx(accountant.get_epsilon(0.1 / 4), rel=1e-9)
    first, second = (r["epsilon"] for r in rows(run.run_dir, "federation"))
    assert first < second == run.summary["privacy"]["epsilon"]  # cumulative over rounds


def test_central_adaptive_client_clipping_runs(simulation) -> None:
    run = simulation.run("privacy=central-adaptive", "privacy.clipping=client", *SHORT)
    assert run.status == "finished:completed", run.record.get("status-details")
    assert run.summary["rounds"] == 2
    assert {r["hospital"] for r in rows(run.run_dir, "train")} == {"cleveland", "hungarian", "switzerland", "va"}
    assert all(r["norm_bit"] in (0, 1) for r in rows(run.run_dir, "train"))  # Flower's adaptive mod ran
