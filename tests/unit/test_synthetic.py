"""Synthetic hospitals: valid UCI files, heterogeneous between hospitals, reproducible; partition lookup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedheart.hospital import load_hospital
from fedheart.schema import COLUMNS
from fedheart.sources import DataNotFoundError, partition_file
from fedheart.synthetic import OPTIONAL, draw_profiles, generate
from fedheart.tables import read_table, summarize


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> list[Path]:
    return generate(tmp_path_factory.mktemp("synthetic"), 24, data_dir, seed=3)


def test_every_file_passes_validation_and_splits(synthetic: list[Path]) -> None:
    assert len(synthetic) == 24
    for path in synthetic:
        table = read_table(path)  # strict: raises on any problem
        assert list(table.frame.columns) == list(COLUMNS)
        data = load_hospital(path, seed=43, pipeline="project")
        assert len(data.y_train) > 0 and len(data.y_test) > 0


def test_hospitals_differ_in_size_label_balance_and_missingness(synthetic: list[Path]) -> None:
    summaries = [summarize(read_table(p)) for p in synthetic]
    rows = np.array([s["rows"] for s in summaries])
    positive = np.array([s["positive"] / s["rows"] for s in summaries])
    missing = np.array([sum(s["missing"][c] for c in OPTIONAL) / (s["rows"] * len(OPTIONAL)) for s in summaries])
    assert rows.min() >= 40 and rows.max() <= 400 and rows.max() / rows.min() > 3
    assert positive.max() - positive.min() > 0.4
    assert missing.max() - missing.min() > 0.1
    assert all(0 < p < 1 for p in positive)  # both classes in every hospital


def test_same_seed_same_files_other_seed_other_files(synthetic: list[Path], tmp_path: Path, data_dir: Path) -> None:
    again = generate(tmp_path / "again", 24, data_dir, seed=3)
    assert [p.read_text() for p in again] == [p.read_text() for p in synthetic]
    other = generate(tmp_path / "other", 24, data_dir, seed=4)
    assert [p.read_text() for p in other] != [p.read_text() for p in synthetic]


def test_profiles_reject_bad_ranges() -> None:
    with pytest.raises(ValueError, match="count"):
        draw_profiles(0, ["va"])
    with pytest.raises(ValueError, match="sizes"):
        draw_profiles(3, ["va"], sizes=(50, 10))


def test_partition_file_is_the_ith_file_in_sorted_order(synthetic: list[Path]) -> None:
    folder = synthetic[0].parent
    assert [partition_file(folder, i) for i in range(len(synthetic))] == sorted(synthetic)
    with pytest.raises(DataNotFoundError, match=r"partition 24 has no file.*holds 24 file"):
        partition_file(folder, 24)
    with pytest.raises(DataNotFoundError, match="is not a folder"):
        partition_file(folder / "missing", 0)
