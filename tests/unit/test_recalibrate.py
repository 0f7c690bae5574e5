"""`fedheart recalibrate`: a new hospital refits intercept and slope on its own labelled sample."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from fedheart.calibration import logistic_recalibration
from fedheart.onnx_export import ONNX_FILE
from fedheart.predict import ModelError, load_model, predict_file
from fedheart.recalibrate import recalibrate
from fedheart_cli.main import main
from tests.unit.model_folders import features_matrix, flamby_run, project_run, uci_tables, write_rows

SAMPLE_ROWS = 150  # of Cleveland's 303: the site's calibration sample; the others judge the result


@pytest.fixture(scope="module")
def tables(data_dir: Path) -> list:
    return uci_tables(data_dir)


@pytest.fixture(scope="module")
def overconfident(tmp_path_factory: pytest.TempPathFactory, tables) -> Path:
    """A deliberately miscalibrated model: its logits are 3 times too large and shifted by +3."""
    return project_run(tmp_path_factory.mktemp("over"), tables, steps=200, scale=3.0, shift=3.0)


@pytest.fixture(scope="module")
def cleveland(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Path, np.ndarray]:
    """Cleveland split in two files: the calibration sample and the rows that judge it (with their labels)."""
    rows = (data_dir / "processed.cleveland.data").read_text().splitlines()
    diseased = np.array([float(r.split(",")[13]) > 0 for r in rows])
    rng = np.random.default_rng(7)  # stratified: both files hold the same share of diseased patients
    halves = [rng.permutation(np.flatnonzero(diseased == c)) for c in (False, True)]
    share = SAMPLE_ROWS / len(rows)
    first = [h[: round(len(h) * share)] for h in halves]
    order = np.concatenate([*first, *(h[len(f):] for h, f in zip(halves, first, strict=True))])
    assert len(first[0]) + len(first[1]) == SAMPLE_ROWS
    folder = tmp_path_factory.mktemp("cleveland")
    sample = write_rows(folder / "sample.csv", [rows[i] for i in order[:SAMPLE_ROWS]])
    judge = write_rows(folder / "judge.csv", [rows[i] for i in order[SAMPLE_ROWS:]])
    labels = np.array([float(rows[i].split(",")[13]) > 0 for i in order[SAMPLE_ROWS:]], dtype=int)
    return sample, judge, labels


def slope_and_intercept(labels: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """The calibration line fitted by scikit-learn (unpenalised), independently of fedheart.calibration."""
    z = np.log(p / (1 - p)).reshape(-1, 1)
    fit = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(z, labels)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_recalibration_brings_the_slope_back_to_about_one(tmp_path: Path, overconfident: Path, cleveland,
                                                          capsys: pytest.CaptureFixture) -> None:
    sample, judge, labels = cleveland
    before = predict_file(overconfident, judge).probability
    slope, _ = slope_and_intercept(labels, before)
    too_high = before.mean() - labels.mean()
    assert slope < 0.6 and too_high > 0.15, (slope, too_high)  # too extreme and too high, as built
    untouched = digest(overconfident)
    out = tmp_path / "cleveland-model"
    assert main(["recalibrate", str(overconfident), str(sample), "--out", str(out)]) == 0
    assert f"fitted on {SAMPLE_ROWS} rows" in capsys.readouterr().out
    assert digest(overconfident) == untouched
    after = predict_file(out, judge).probability
    slope, _ = slope_and_intercept(labels, after)
    assert 0.75 <= slope <= 1.33 and abs(after.mean() - labels.mean()) < 0.08, (slope, after.mean(), labels.mean())
    assert roc_auc_score(labels, after) == pytest.approx(roc_auc_score(labels, before), abs=1e-9)  # monotone
    meta = json.loads((out / "final_model.json").read_text())
    assert meta["recalibration"]["rows"] == SAMPLE_ROWS and meta["threshold"] == 0.5


def test_the_recalibrated_onnx_equals_predict(tmp_path: Path, overconfident: Path, cleveland, tables) -> None:
    import onnxruntime as ort

    sample, _, _ = cleveland
    out = tmp_path / "model"
    recalibrate(overconfident, sample, out)
    assert sorted(p.name for p in out.iterdir()) == ["final_model.json", "final_model.npz", ONNX_FILE,
                                                     "final_model.pt"]
    frame = pd.concat([t.frame for t in tables])
    session = ort.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
    (got,) = session.run(["probability"], {"features": features_matrix(frame)})
    expected = np.concatenate([predict_file(out, Path(t.path)).probability for t in tables])
    assert np.max(np.abs(got - expected)) <= 1e-6
    original = np.concatenate([predict_file(overconfident, Path(t.path)).probability for t in tables])
    assert np.max(np.abs(expected - original)) > 0.05  # the graph holds the recalibration


def test_recalibrating_twice_composes(tmp_path: Path, overconfident: Path, cleveland) -> None:
    sample, judge, _ = cleveland
    first, second = tmp_path / "first", tmp_path / "second"
    fit_one, _ = recalibrate(overconfident, sample, first)
    fit_two, _ = recalibrate(first, sample, second)
    assert fit_two.fitted == pytest.approx((0.0, 1.0), abs=1e-6)  # already calibrated on this sample
    assert np.allclose(predict_file(second, judge).probability, predict_file(first, judge).probability, atol=1e-6)
    assert load_model(second).recalibration == pytest.approx(fit_one.combined, abs=1e-6)


def test_the_source_folder_is_never_written(tmp_path: Path, overconfident: Path, cleveland) -> None:
    sample, _, _ = cleveland
    untouched = digest(overconfident)
    with pytest.raises(ModelError, match="never modified"):
        recalibrate(overconfident, sample, overconfident / "inside")
    with pytest.raises(ModelError, match="never modified"):
        recalibrate(overconfident, sample, overconfident)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "note.txt").write_text("mine")
    with pytest.raises(ModelError, match="not an empty folder"):
        recalibrate(overconfident, sample, taken)
    assert digest(overconfident) == untouched and (taken / "note.txt").read_text() == "mine"


def test_a_sample_without_labels_or_with_one_class_is_refused(tmp_path: Path, overconfident: Path, data_dir: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    rows = (data_dir / "processed.cleveland.data").read_text().splitlines()[:30]
    unlabelled = write_rows(tmp_path / "u.csv", [",".join(r.split(",")[:13]) for r in rows])
    assert main(["recalibrate", str(overconfident), str(unlabelled), "--out", str(tmp_path / "a")]) == 2
    assert f"{unlabelled}, line 1: expected 14 comma-separated fields" in capsys.readouterr().err
    healthy = write_rows(tmp_path / "h.csv", [r for r in rows if r.endswith(",0")])
    assert main(["recalibrate", str(overconfident), str(healthy), "--out", str(tmp_path / "b")]) == 2
    assert "both classes are needed" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not list(tmp_path.glob(".*"))  # no staging folder left behind


def test_a_sample_the_model_separates_is_recalibrated(tmp_path: Path, overconfident: Path, data_dir: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """Few patients without disease, all scored below every diseased one (Switzerland-like): maximum
    likelihood has no finite slope there; Firth's penalised fit (FLIC) has one."""
    rows = (data_dir / "processed.cleveland.data").read_text().splitlines()
    source = write_rows(tmp_path / "all.csv", rows)
    p = predict_file(overconfident, source).probability
    diseased = np.array([float(r.split(",")[13]) > 0 for r in rows])
    healthy = np.flatnonzero(~diseased)[np.argsort(p[~diseased])[:3]]  # the 3 lowest-scored healthy patients
    sick = np.flatnonzero(diseased & (p > p[healthy].max()))[:30]
    labels = np.r_[np.zeros(len(healthy)), np.ones(len(sick))]
    assert len(sick) == 30 and np.isnan(logistic_recalibration(labels, p[np.r_[healthy, sick]])[1])  # separated
    sample = write_rows(tmp_path / "sample.csv", [rows[i] for i in np.r_[healthy, sick]])
    out = tmp_path / "model"
    assert main(["recalibrate", str(overconfident), str(sample), "--out", str(out)]) == 0
    assert "fewer than 50 rows in one class" in capsys.readouterr().out
    fitted = json.loads((out / "final_model.json").read_text())["recalibration"]
    assert "FLIC" in fitted["method"] and 0 < fitted["fitted-slope"] < 50 and fitted["rows"] == 33
    assert np.isfinite(predict_file(out, source).probability).all()


def test_a_flamby_model_takes_the_sites_standardisation_along(tmp_path: Path, tables, data_dir: Path,
                                                              cleveland) -> None:
    run = flamby_run(tmp_path / "run", tables)
    sample, _, _ = cleveland
    with pytest.raises(ModelError, match="--standardise-from"):
        recalibrate(run, sample, tmp_path / "x")
    own = data_dir / "processed.cleveland.data"
    out = tmp_path / "cleveland"
    recalibrate(run, sample, out, standardise_from=own)
    assert (out / ONNX_FILE).is_file()
    complete = predict_file(out, sample).probability  # no option needed any more: the folder carries it
    assert np.isfinite(complete).all() and len(complete) > 0
    assert load_model(out).preprocessor.mean == load_model(run, standardise_from=own).preprocessor.mean
