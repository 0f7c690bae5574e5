"""Real Flower simulations of the four UCI hospitals (one shared SuperLink)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.e2e


def test_four_hospitals_two_rounds_then_resume_to_three(simulation) -> None:
    run = simulation.run("rounds=2")
    assert run.status == "finished:completed", run.record.get("status-details")
    summary = run.summary
    assert set(summary["hospitals"]) == {"cleveland", "hungarian", "switzerland", "va"}
    assert summary["rounds"] == 2
    mean_auc = summary["means"]["auc"]
    # The majority-class predictor has AUC 0.5 at every hospital; accuracy must beat it on average.
    assert mean_auc > 0.5
    assert summary["means"]["accuracy"] > summary["means"]["majority-accuracy"]
    # clinical validation per hospital (at the hospital) and pooled (from the summed histograms)
    for row in [*summary["hospitals"].values(), summary["pooled"]]:
        assert {"brier", "calibration-slope", "calibration-intercept", "sensitivity", "specificity"} <= set(row)
        low, high = row["auc-ci"]
        assert 0 <= row["brier"] <= 1 and (low is None) == (high is None)  # None: under 2 rows of a class
        assert low is None or 0 <= low <= row["auc"] <= high <= 1
    assert None not in summary["pooled"]["auc-ci"] and None not in summary["hospitals"]["cleveland"]["auc-ci"]
    assert summary["hospitals"]["switzerland"]["warnings"]  # 16 test rows
    assert 'src="report/reliability.png"' in (run.run_dir / "report.html").read_text()
    rows = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {(r["round"], r["phase"]) for r in rows} >= {(1, "train"), (1, "evaluate"), (2, "federation")}
    for name in ("config.yaml", "checkpoint.pt", "final_model.pt", "final_model.json", "summary.md"):
        assert (run.run_dir / name).is_file(), name
    meta = json.loads((run.run_dir / "final_model.json").read_text())
    assert len(meta["features"]) == len(meta["preprocessing"]["feature_names"]) > 13

    # Resume the same run folder from its checkpoint: it continues at round 3 only.
    resumed = simulation.run(f"resume={run.run_dir}", "rounds=3")
    assert resumed.status == "finished:completed", resumed.record.get("status-details")
    after = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert after[: len(rows)] == rows
    assert sorted({r["round"] for r in after}) == [1, 2, 3]
    assert len([r for r in after if r["phase"] == "federation"]) == 3
    assert json.loads((run.run_dir / "summary.json").read_text())["rounds"] == 3


def test_wrong_config_key_fails_the_run_before_round_one(simulation) -> None:
    run = simulation.run("train.lrr=0.1")
    assert run.status == "finished:failed"
    assert "train.lrr" in run.record["status-details"]
    assert not (run.run_dir / "metrics.jsonl").exists()


def test_a_personalised_run_keeps_the_heads_at_the_hospitals(simulation) -> None:
    import numpy as np

    from fedheart.model import build_model, get_weights

    run = simulation.run("personalization=fedper", "model=mlp", "rounds=2")
    assert run.status == "finished:completed", run.record.get("status-details")
    section = run.summary["personalization"]
    assert section["method"] == "fedper" and set(section["hospitals"]) == set(run.summary["hospitals"])
    for row in section["hospitals"].values():
        assert 0.0 <= row["personal-accuracy"] <= 1.0 and row["local-only-accuracy"] is not None
    assert "## Personalisation (fedper)" in (run.run_dir / "summary.md").read_text()
    # The server's model: the aggregated body, and the head it started with (no hospital ever sent its own).
    with np.load(run.run_dir / "final_model.npz") as final:
        saved = {k: final[k] for k in final.files}
    initial = get_weights(build_model("mlp", saved["net.0.weight"].shape[1], seed=0))
    assert np.array_equal(saved["net.3.weight"], initial["net.3.weight"])
    assert not np.allclose(saved["net.0.weight"], initial["net.0.weight"])
