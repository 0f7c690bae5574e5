"""fedheart.hospital.configured_hospitals: the one way a benchmark loads the configured hospitals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedheart.config import load_config
from fedheart.hospital import configured_hospitals
from fedheart.sources import ENV_DATA_DIR, DataNotFoundError


def _rows(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def test_the_configured_hospitals_their_rows_split_and_pipeline(data_dir: Path) -> None:
    cfg = load_config("data.hospitals=[va,cleveland] data.split_seed=7 data.train_fraction=0.5")
    got = configured_hospitals(cfg, root=data_dir)
    assert list(got) == ["va", "cleveland"]
    default = configured_hospitals(load_config("data.hospitals=[va,cleveland] data.split_seed=7"), root=data_dir)
    for key, data in got.items():
        assert data.name == key and data.pipeline == "project"
        assert len(data.split.train) + len(data.split.test) == _rows(data_dir / f"processed.{key}.data")
        assert len(data.split.test) > len(default[key].split.test)  # train_fraction 0.5 < the default 0.66
    other = configured_hospitals(load_config("data.hospitals=[va] data.split_seed=8 data.train_fraction=0.5"),
                                 root=data_dir)
    assert not np.array_equal(np.sort(other["va"].split.train), np.sort(got["va"].split.train))  # the seed is used
    assert configured_hospitals(cfg, root=data_dir, pipeline="flamby")["va"].pipeline == "flamby"


def test_a_missing_file_is_named_with_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_DATA_DIR, raising=False)  # it beats the folder given (fedheart.sources.data_dir)
    cfg = load_config("data.hospitals=[hungarian] data.download=false")
    with pytest.raises(DataNotFoundError, match=rf"processed\.hungarian\.data.*{tmp_path}"):
        configured_hospitals(cfg, root=tmp_path)
