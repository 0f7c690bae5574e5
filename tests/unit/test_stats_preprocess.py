"""Federated statistics equal pooled ones; both pipelines produce the right features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedheart import stats as fstats
from fedheart.hospital import load_hospital
from fedheart.preprocess import flamby_preprocessor, project_preprocessor
from fedheart.schema import HOSPITALS


@pytest.fixture(scope="module")
def hospitals(data_dir: Path):
    return [load_hospital(data_dir / h.filename, seed=43, pipeline="project", name=h.key) for h in HOSPITALS]


def test_federated_statistics_equal_pooled_statistics(hospitals) -> None:
    fed = fstats.GlobalStats.from_totals(fstats.combine(h.statistics() for h in hospitals))
    pooled = fstats.clean(pd.concat([h.train_frame for h in hospitals]))
    assert fed.n == len(pooled)
    for col in fstats.NUMERIC:
        assert fed.mean[col] == pytest.approx(pooled[col].mean(), rel=1e-12)
        assert fed.std[col] == pytest.approx(pooled[col].std(ddof=0), rel=1e-9)
        assert fed.missing_rate[col] == pytest.approx(pooled[col].isna().mean(), abs=1e-12)
    for col in fstats.CATEGORICAL:
        assert fed.missing_rate[col] == pytest.approx(pooled[col].isna().mean(), abs=1e-12)


def test_statistics_hold_no_rows(hospitals) -> None:
    stats = hospitals[0].statistics()
    assert list(stats) == fstats.stat_keys()
    assert all(isinstance(v, float) for v in stats.values())


def test_swiss_cholesterol_falls_back_to_global_mean(hospitals) -> None:
    swiss = hospitals[2]
    assert fstats.clean(swiss.train_frame)["chol"].isna().all()  # never recorded (all zeros)
    fed = fstats.GlobalStats.from_totals(fstats.combine(h.statistics() for h in hospitals))
    pre = project_preprocessor(fed)
    x = pre.transform(swiss.train_frame)
    chol = pre.feature_names.index("chol")
    assert np.allclose(x[:, chol], 0.0)  # global mean, standardised
    assert np.all(x[:, pre.feature_names.index("chol_missing")] == 1.0)
    assert np.isfinite(x).all()


def test_project_features_are_identical_layout_everywhere(hospitals) -> None:
    fed = fstats.GlobalStats.from_totals(fstats.combine(h.statistics() for h in hospitals))
    pre = project_preprocessor(fed)
    shapes = {h.name: pre.transform(h.test_frame).shape[1] for h in hospitals}
    assert set(shapes.values()) == {pre.num_features}
    assert "cp=4" in pre.feature_names and "thal=7" in pre.feature_names


def test_flamby_pipeline_has_13_standardised_features(data_dir: Path) -> None:
    h = load_hospital(data_dir / "processed.cleveland.data", seed=43, pipeline="flamby")
    pre = flamby_preprocessor(h.train_frame)
    x = pre.transform(h.train_frame)
    assert x.shape == (199, 13)
    assert np.allclose(x.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(x.std(axis=0, ddof=1), 1, atol=1e-4)
    assert pre.feature_names[-5:] == ["cp=2", "cp=3", "cp=4", "restecg=1", "restecg=2"]


def test_flamby_split_matches_flamby_split_csv(data_dir: Path, flamby_split: Path) -> None:
    ref = pd.read_csv(flamby_split)
    for h in HOSPITALS:
        data = load_hospital(data_dir / h.filename, seed=43, pipeline="flamby")
        rows = ref[ref.center_id == h.center_id]
        for part, positions in (("train", data.split.train), ("test", data.split.test)):
            expected = rows[rows.split == part].sort_values("file_row")
            assert list(data.table.file_rows[positions]) == list(expected.file_row), (h.key, part)
            assert list(data.table.labels[positions]) == list(expected.label), (h.key, part)


def test_project_split_tests_on_flamby_rows_and_trains_on_the_rest(data_dir: Path, flamby_split: Path) -> None:
    ref = pd.read_csv(flamby_split)
    for h in HOSPITALS:
        data = load_hospital(data_dir / h.filename, seed=43, pipeline="project")
        test_rows = set(ref[(ref.center_id == h.center_id) & (ref.split == "test")].file_row)
        assert set(data.table.file_rows[data.split.test]) == test_rows
        assert not set(data.split.train) & set(data.split.test)
        assert len(data.split.train) + len(data.split.test) == len(data.table.frame)


def test_split_seed_changes_the_split(data_dir: Path) -> None:
    a = load_hospital(data_dir / "processed.hungarian.data", seed=43, pipeline="project")
    b = load_hospital(data_dir / "processed.hungarian.data", seed=7, pipeline="project")
    assert set(a.split.test) != set(b.split.test)
    assert abs(a.y_test.mean() - b.y_test.mean()) < 0.02  # stratified


def test_features_are_kept_for_the_same_preprocessing_and_redone_for_another(hospitals) -> None:
    one = fstats.GlobalStats.from_totals(fstats.combine(h.statistics() for h in hospitals))
    other = fstats.GlobalStats.from_totals(hospitals[0].statistics())  # cleveland's own statistics
    cleveland = hospitals[0]
    first = cleveland.features(project_preprocessor(one))
    assert cleveland.features(project_preprocessor(one)) is first  # an equal preprocessing: kept
    again = cleveland.features(project_preprocessor(other))
    assert again is not first
    expected = project_preprocessor(other).transform(cleveland.train_frame)
    assert np.array_equal(again[0], expected)
