"""SecAgg+ (``aggregation=secagg``) in real Flower simulations, beside plain FedAvg."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fedheart.config import load_config
from fedheart.secagg import quantization_tolerance

pytestmark = pytest.mark.e2e


def metric_rows(run, phase: str) -> list[dict]:
    lines = (run.run_dir / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if row["phase"] == phase]


@pytest.fixture(scope="module")
def runs(simulation) -> dict:
    """The same two rounds (same seeds) with plain aggregation and with SecAgg+."""
    return {mode: simulation.run("rounds=2", "baselines=false", f"aggregation={mode}") for mode in ("plain", "secagg")}


def test_secagg_run_completes_with_every_round_securely_aggregated(runs) -> None:
    run = runs["secagg"]
    assert run.status == "finished:completed", run.record.get("status-details")
    assert run.summary["aggregation"] == "secagg" and run.summary["rounds"] == 2
    rounds = [(r["round"], r["status"], r["active"]) for r in metric_rows(run, "secagg")]
    assert rounds == [(1, "completed", 4), (2, "completed", 4)]


def test_secagg_model_equals_plain_fedavg_within_the_quantisation_bound(runs) -> None:
    """Round 1: same start, same hospital updates, so the aggregates differ by at most ``tol`` per value.

    Round 2 starts from models ``tol``-close; one round of local SGD on the logistic loss (convex,
    lr 0.05 far below 2/smoothness) does not expand differences, so after round 2 the L2 distance
    is at most ``sqrt(d)·tol`` plus round 2's own quantisation: per value ``(1 + sqrt(d))·tol``.
    """
    plain, secure = runs["plain"], runs["secagg"]
    assert plain.status == "finished:completed", plain.record.get("status-details")
    a = torch.load(plain.run_dir / "final_model.pt")
    b = torch.load(secure.run_dir / "final_model.pt")
    rows = [float(h["train-rows"]) for h in secure.summary["hospitals"].values()]
    tol = quantization_tolerance(load_config("aggregation=secagg").aggregation, rows)
    d = sum(v.numel() for v in a.values())
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff <= (1 + math.sqrt(d)) * tol
    initial = torch.load(plain.run_dir / "checkpoint.pt")["initial_weights"]
    assert max(float((a[k] - initial[k]).abs().max()) for k in a) > 100 * (1 + math.sqrt(d)) * tol  # not vacuous
    # Round 1 trained every hospital from the same model: their reported losses are identical.
    first = {mode: {r["hospital"]: r["train-loss"] for r in metric_rows(run, "train") if r["round"] == 1}
             for mode, run in runs.items()}
    assert first["plain"] == first["secagg"] and len(first["plain"]) == 4


def test_secagg_overflowing_weights_fail_the_run_before_round_one(simulation) -> None:
    run = simulation.run("rounds=2", "aggregation=secagg", "aggregation.max_weight=150")
    assert run.status == "finished:failed"
    details = run.record["status-details"]
    assert "aggregation.max_weight" in details and "hungarian (205)" in details, details
    assert not (run.run_dir / "metrics.jsonl").exists()
