"""Run folders: atomic checkpoints, metrics files, summary table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedheart.runs import RunDir, load_checkpoint
from fedheart.summary import federation_metrics, summary_table


def state(round_: int) -> dict:
    return {"round": round_, "weights": {"w": torch.full((3,), float(round_))}}


def test_checkpoint_round_trip_and_overwrite(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.save_checkpoint(state(1))
    run.save_checkpoint(state(2))
    loaded = load_checkpoint(tmp_path / "run")
    assert loaded["round"] == 2 and torch.equal(loaded["weights"]["w"], torch.full((3,), 2.0))
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["checkpoint.pt"]


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    run = RunDir(tmp_path)
    run.save_checkpoint(state(1))

    def broken_save(obj, f) -> None:
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the process is interrupted mid-write

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        run.save_checkpoint(state(2))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["round"] == 1
    assert not list(tmp_path.glob(".*tmp"))


def test_unreadable_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nowhere")


def test_metrics_truncate_after_a_round(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.append_metrics([{"round": r, "phase": "federation", "loss": float("nan")} for r in (1, 2, 3)])
    run.truncate_metrics_after(2)
    rows = run.read_metrics()
    assert [r["round"] for r in rows] == [1, 2] and rows[0]["loss"] is None


def hospital(acc: float, auc: float, n: int, pos: list[int], neg: list[int]) -> dict:
    return {"accuracy": acc, "auc": auc, "loss": 0.5, "num-examples": n, "hist-pos": pos, "hist-neg": neg}


def test_federation_metrics_and_summary_table() -> None:
    final = {"a": hospital(0.8, 0.9, 10, [0, 0, 5], [5, 0, 0]), "b": hospital(0.6, math.nan, 4, [0, 4, 0], [0, 0, 0])}
    fed = federation_metrics(final)
    assert fed["mean-accuracy"] == pytest.approx(0.7)
    assert fed["mean-auc"] == pytest.approx(0.9)  # NaN AUC (single class) is left out of the mean
    assert fed["pooled-auc"] == pytest.approx(1.0)
    table, data = summary_table(final, {"a": {"majority-accuracy": 0.5, "local-accuracy": 0.75}}, {"a": 20, "b": 8})
    assert "| a | 20 | 10 | 0.800 | 0.900 | 0.500 | 0.750 |" in table
    assert "n/a" in table and "**mean over hospitals**" in table and "**pooled test set**" in table
    assert data["means"]["accuracy"] == pytest.approx(0.7)
    assert np.isclose(data["federation"]["pooled-auc"], 1.0)
