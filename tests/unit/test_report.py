"""The run report: plots and HTML from a run folder, and ``fedheart report RUN_DIR``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from fedheart.histograms import score_histograms
from fedheart.report import FINAL_EVAL, write_report
from fedheart.runs import RunDir, write_json
from fedheart.summary import summary_table
from fedheart_cli.main import main as cli

HOSPITALS = ("cleveland", "va")


def final_eval(seed: int = 0) -> dict[str, dict]:
    """Per-hospital final metrics with real score histograms (separable scores -> AUC near 1)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, name in enumerate(HOSPITALS):
        labels = rng.integers(0, 2, 80)
        scores = np.clip(labels * 0.6 + rng.random(80) * (0.5 + i * 0.3), 0, 1)
        pos, neg = score_histograms(labels, scores)
        out[name] = {"loss": 0.4 + i / 10, "auc": 0.9 - i / 10, "accuracy": 0.8 - i / 10, "num-examples": 80.0,
                     "hist-pos": pos, "hist-neg": neg}
    return out


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A finished two-round run with differential privacy (epsilon in the train rows)."""
    path = tmp_path / "20261125-010203-fedavg-run7"
    run = RunDir(path)
    (path / "config.yaml").write_text("strategy: {name: fedavg}\nrounds: 2\nmodel: {name: logreg}\n"
                                      "privacy: {mode: dp}\ntracking: {backend: sagemaker}\n")
    write_json(path / "tracking.json", {"experiment": "fed-heart-disease-20261125-010203-0000000007"})
    for rnd in (1, 2):
        run.append_metrics(
            [{"round": rnd, "phase": "train", "hospital": h, "train-loss": 0.7 - rnd / 10, "epsilon": rnd * 0.8}
             for h in HOSPITALS]
            + [{"round": rnd, "phase": "evaluate", "hospital": h, "loss": 0.6, "auc": 0.7 + rnd / 10,
                "accuracy": 0.7, "num-examples": 80.0} for h in HOSPITALS]
            + [{"round": rnd, "phase": "federation", "hospital": "all", "loss": 0.6, "pooled-auc": 0.75,
                "mean-auc": 0.8, "mean-accuracy": 0.7, "train-loss": 0.6, "seconds": 3.5}])
    final = final_eval()
    baselines = {h: {"majority-accuracy": 0.55, "local-accuracy": 0.6, "local-auc": math.nan} for h in HOSPITALS}
    _, summary = summary_table(final, baselines, {"cleveland": 200, "va": 130})
    write_json(path / "summary.json", summary | {"rounds": 2, "seconds": 42.0, "strategy": "fedavg",
                                                 "protocol": "project"})
    return path


def test_report_holds_plots_and_final_table(run_dir: Path) -> None:
    report = write_report(run_dir, final=final_eval())
    assert report == run_dir / "report.html"
    assert json.loads((run_dir / FINAL_EVAL).read_text())["va"]["hist-pos"] == final_eval()["va"]["hist-pos"]
    for name in ("loss", "auc", "roc", "epsilon"):
        image = imread(run_dir / "report" / f"{name}.png")
        assert image.shape[0] > 300 and image.shape[1] > 400, name
        assert image[..., :3].std() > 0.05, f"{name}.png is blank"
        assert f'src="report/{name}.png"' in report.read_text()
    page = report.read_text()
    for text in ("cleveland", "va", "fed-heart-disease-20261125-010203-0000000007", "fedavg", "majority acc.",
                 "pooled test set", "0.900", "0.550", ">200<", "n/a"):
        assert text in page, text


def test_report_command_rebuilds_from_the_files(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    write_json(run_dir / FINAL_EVAL, final_eval())
    assert cli(["report", str(run_dir)]) == 0
    assert "report written to" in capsys.readouterr().out
    assert (run_dir / "report" / "roc.png").is_file()


def test_report_of_an_unfinished_run_says_so(run_dir: Path) -> None:
    (run_dir / "summary.json").unlink()
    page = write_report(run_dir).read_text()
    assert "the run did not finish" in page
    assert not (run_dir / "report" / "roc.png").exists()  # no final evaluation, no ROC
    assert (run_dir / "report" / "auc.png").is_file()


def test_report_command_explains_a_wrong_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli(["report", str(tmp_path / "missing")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    assert cli(["report", str(tmp_path)]) == 1
    assert "metrics.jsonl not found" in capsys.readouterr().err
