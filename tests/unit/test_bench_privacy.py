"""bench/privacy_sweep.py: the privacy benchmark's runs of the real Federation over a LoopbackGrid."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench.privacy_sweep import DELTA, federate, run_config, synthetic_clients
from fedheart.config import load_config
from fedheart.schema import HOSPITALS
from fedheart.tables import read_table

KEYS = [h.key for h in HOSPITALS]


def _rows(frame) -> set[tuple]:  # type: ignore[no-untyped-def]
    return {tuple("?" if isinstance(v, float) and math.isnan(v) else float(v) for v in row)
            for row in frame.itertuples(index=False)}


def test_run_config_changes_only_the_privacy_of_the_same_training() -> None:
    cfg = load_config(["privacy=dp-sgd"])
    plain, private, other = run_config(cfg, None, 3), run_config(cfg, 2.0, 3), run_config(cfg, 2.0, 4)
    assert plain.privacy.mode == "none" and private.privacy.mode == "dp-sgd"
    assert plain.train == private.train == cfg.train  # the DP-tuned training, with or without DP
    assert (private.privacy.epsilon, private.privacy.delta, private.privacy.noise_multiplier) == (2.0, DELTA, None)
    assert private.privacy.noise_seed == run_config(cfg, 2.0, 3).privacy.noise_seed != other.privacy.noise_seed
    assert private.seed == 3 and not private.baselines


def test_synthetic_clients_resample_their_parent_hospitals_rows(tmp_path: Path, data_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDHEART_DATA_DIR", str(data_dir))
    folder = synthetic_clients(load_config(), 8, seed=0, folder=tmp_path / "clients")
    files = sorted(folder.iterdir())
    assert len(files) == 8
    parents = {h.key: read_table(data_dir / h.filename).frame for h in HOSPITALS}
    for i, path in enumerate(files):
        parent = parents[KEYS[i % 4]]
        assert path.name.endswith(f"-{KEYS[i % 4]}.data")
        rows = read_table(path).frame
        assert len(rows) == len(parent)
        assert _rows(rows) <= _rows(parent)
        assert len(_rows(rows)) < len(parent)  # drawn with replacement: some rows twice
    assert _rows(read_table(files[0]).frame) != _rows(read_table(files[4]).frame)  # drawn apart


def test_a_dp_run_of_the_real_federation_reports_each_hospitals_spending(tmp_path: Path, data_dir: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDHEART_DATA_DIR", str(data_dir))
    cfg = load_config(["privacy=dp-sgd", "rounds=2", "train.local_steps=3"])
    private = federate(run_config(cfg, 1.0, 0), tmp_path)
    assert private["rounds"] == 2 and sorted(private["hospitals"]) == sorted(KEYS)
    assert sorted(private["epsilons"]) == sorted(KEYS) and sorted(private["noise-multipliers"]) == sorted(KEYS)
    assert 0.5 < private["epsilon"] == max(private["epsilons"].values()) <= 1.0 + 1e-9  # noise calibrated to 1
    assert all(z > 0 for z in private["noise-multipliers"].values())
    assert private["mean-accuracy"] == pytest.approx(np.mean([h["accuracy"] for h in private["hospitals"].values()]))
    assert 0.0 <= private["mia-auc"] <= 1.0
    plain = federate(run_config(cfg, None, 0), tmp_path)
    assert plain["epsilon"] == math.inf and plain["epsilons"] == {} and plain["noise-multipliers"] == {}
    assert len(list(tmp_path.glob("run-*/*/metrics.jsonl"))) == 2  # each run in its own folder


def test_the_report_says_how_each_sweep_row_was_measured() -> None:
    from bench.privacy_report import markdown

    row = {k: (0.8, 0.01) for k in ("mean-accuracy", "mean-auc", "pooled-auc", "epsilon", "mia-auc", "seconds")}
    results = {"machine": "m", "seeds": [0], "split_seed": 43, "config": {}, "sweep": {"1.0": row, "inf": row}}
    older = markdown(results)
    assert "before the benchmark drove the real Federation)" in older and "†" not in older
    results["sweep"] = {"1.0": {**row, "method": "federation"}, "inf": row}  # 1.0 rerun, inf kept from before
    mixed = markdown(results).splitlines()
    assert "| inf † |" in next(line for line in mixed if line.startswith("| inf"))
    assert "| 1.0 |" in next(line for line in mixed if line.startswith("| 1.0"))
    results["sweep"]["inf"] = {**row, "method": "federation"}
    assert "(the real Federation and ClientApps over an in-process grid)" in markdown(results)
