"""``data.train_fraction=1.0`` in a ``data.holdout`` run: the training hospitals train on all their rows and
keep no test rows; their evaluate replies, the server's aggregation, the summary, the report and the baselines
cope with hospitals that have nothing to evaluate on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import client_app.app as client
from fedheart import stats as fstats
from fedheart.config import ConfigError, load_config
from fedheart.hospital import load_hospital
from fedheart.safeguard.request import check_request
from fedheart.schema import HOSPITALS
from fedheart.summary import federation_metrics, summary_table
from server_app.federation import Federation
from server_app.strategies import build_strategy
from tests.unit.test_holdout import Recording
from tests.unit.test_malicious_server import Server, hospital, metrics_of
from tests.unit.test_safeguard_policy import DP, STRICT

HELD = "cleveland"
ROWS = {"cleveland": 303, "hungarian": 294, "switzerland": 123, "va": 200}  # the UCI files (README)


def _strict(text: str) -> object:
    """JSON that must hold no NaN or Infinity token."""
    def refuse(token: str) -> None:
        raise AssertionError(f"{token} in strict JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("pipeline", ["project", "flamby"])
def test_all_rows_split_keeps_no_test_rows(data_dir: Path, flamby_split: Path, pipeline: str) -> None:
    ref = pd.read_csv(flamby_split)
    for h in HOSPITALS:
        data = load_hospital(data_dir / h.filename, seed=43, pipeline=pipeline, train_fraction=1.0)
        assert len(data.split.test) == 0 and len(data.y_test) == 0
        if pipeline == "project":  # every row of the file
            assert len(data.split.train) == ROWS[h.key], h.key
        else:  # every row FLamby keeps (its train and test rows together)
            kept = ref[ref.center_id == h.center_id].sort_values("file_row")
            assert list(data.table.file_rows[data.split.train]) == list(kept.file_row), h.key


def test_train_fraction_range_is_explained() -> None:
    for bad in ("0", "1.5", "-0.2"):
        with pytest.raises(ConfigError, match=r"'data.train_fraction'.*\(0, 1\].*1.0: all its rows"):
            load_config(f"data.train_fraction={bad}")
    with pytest.raises(ConfigError, match=r"'data.train_fraction'.*no hospital a test row.*data.holdout"):
        load_config("data.train_fraction=1.0")
    assert load_config(f"data.train_fraction=1.0 data.holdout={HELD}").data.train_fraction == 1.0
    assert load_config("data.train_fraction=0.9").data.train_fraction == 0.9


def test_a_hospital_policy_keeps_its_own_fraction() -> None:
    decision = check_request(STRICT, "train", {**DP, "train-fraction": 1.0}, simulation=False)
    assert decision.config["train-fraction"] == 0.66
    assert decision.overrides["train-fraction"] == {"requested": 1.0, "used": 0.66}


def test_evaluate_reply_without_test_rows(tmp_path: Path, data_dir: Path) -> None:
    server = Server([hospital(tmp_path, data_dir, policy=None, name="va")], 1, data_dir,
                    f"train.local_steps=5 rounds=2 data.holdout={HELD} data.train_fraction=1.0")
    metrics = metrics_of(server.evaluate(changes={"train-fraction": 1.0}))
    assert metrics["num-examples"] == 0
    assert sum(metrics["hist-pos"]) + sum(metrics["hist-neg"]) == 0


def _evaluation(n: int, loss: float, auc: float, pos: list[int], neg: list[int]) -> dict:
    return {"num-examples": float(n), "loss": loss, "auc": auc, "accuracy": 0.5 if n else math.nan,
            "hist-pos": pos, "hist-neg": neg}


def test_summary_leaves_a_hospital_without_test_rows_out() -> None:
    pos, neg = [0] * 100, [0] * 100
    pos[80], pos[30], neg[20], neg[60] = 3, 1, 2, 2  # 8 rows
    final = {"a": _evaluation(8, 0.4, 0.75, pos, neg),
             "b": _evaluation(0, math.nan, math.nan, [0] * 100, [0] * 100)}
    fed = federation_metrics(final)
    assert fed["loss"] == pytest.approx(0.4) and fed["num-examples"] == 8  # b's NaN loss not averaged in
    assert fed["mean-auc"] == pytest.approx(0.75) and fed["mean-accuracy"] == pytest.approx(0.5)
    assert fed["pooled-auc"] == pytest.approx((3 * 4 + 1 * 2) / (4 * 4))  # pairs a positive wins
    text, data = summary_table(final, {"b": {"majority-accuracy": math.nan}}, {"a": 20, "b": 30})
    assert data["without-test-rows"] == ["b"]
    b = data["hospitals"]["b"]
    assert b["test-rows"] == 0 and b["warnings"] == [] and "no internal test rows" in b["note"]
    assert data["pooled"]["test-rows"] == 8
    assert "b: no internal test rows" in text and "only 0 events" not in text
    assert federation_metrics({"b": final["b"]})["num-examples"] == 0  # nothing evaluated at all: no crash


def test_holdout_run_on_all_rows(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDHEART_DATA_DIR", str(data_dir))
    monkeypatch.setenv("FEDHEART_OUTPUT_DIR", str(tmp_path / "outputs"))
    cfg = load_config(f"rounds=2 train.local_steps=5 data.holdout={HELD} data.train_fraction=1.0")
    grid = Recording(client.app, [{"partition-id": i, "num-partitions": 4} for i in range(4)])
    federation = Federation(cfg, grid, build_strategy(cfg), run_id=1)
    federation.run()
    others = [h for h in HOSPITALS if h.key != HELD]
    # the federation's preprocessing: every row of the other three hospitals
    frames = [load_hospital(data_dir / h.filename, seed=43, pipeline="project").table.frame for h in others]
    expected = fstats.GlobalStats.from_totals(fstats.combine([fstats.local_stats(f) for f in frames]))
    assert federation.preprocessing == expected.to_json()
    node = next(n for n, h in federation.hospitals.items() if h.name == HELD)
    assert [n for n, kind in grid.sent if kind == "query.baseline"] == [node]  # the others have nothing to compare

    run = federation.run_dir.path
    summary = _strict((run / "summary.json").read_text())
    assert isinstance(summary, dict)
    assert summary["without-test-rows"] == [h.key for h in others]
    assert {k: r["train-rows"] for k, r in summary["hospitals"].items()} == {h.key: ROWS[h.key] for h in others}
    assert all(r["test-rows"] == 0 and r["note"] for r in summary["hospitals"].values())
    assert summary["pooled"] == {} and summary["federation"]["num-examples"] == 0
    external = summary["external"][HELD]
    assert external["test-rows"] == ROWS[HELD] and np.isfinite(external["auc"])
    assert external["local-auc"] is not None and 0.5 < external["local-auc"] <= 1.0  # on its default split
    for line in (run / "metrics.jsonl").read_text().splitlines():
        _strict(line)
    page = (run / "report.html").read_text()
    assert "no internal test rows" in page and "External validation" in page
    assert "no internal test rows" in (run / "summary.md").read_text()
