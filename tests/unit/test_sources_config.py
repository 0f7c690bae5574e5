"""Finding data (env beats config, verified download) and configuration errors."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedheart.config import ConfigError, load_config
from fedheart.schema import hospital
from fedheart.sources import ENV_DATA_DIR, DataNotFoundError, hospital_file, sha256


@pytest.fixture
def mirror(tmp_path: Path, data_dir: Path) -> Iterator[tuple[str, Path]]:
    """A UCI-like archive on loopback: real Cleveland file, tampered VA file."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(data_dir / "processed.cleveland.data", served)
    (served / "processed.va.data").write_text("63,1,4,140,260,0,1,112,1,3,2,?,?,2\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", tmp_path / "cache"
    finally:
        server.shutdown()
        thread.join()


def test_download_verifies_checksum_and_saves(mirror, monkeypatch: pytest.MonkeyPatch) -> None:
    url, cache = mirror
    monkeypatch.delenv(ENV_DATA_DIR, raising=False)
    path = hospital_file(hospital("cleveland"), str(cache), allow_download=True, base_url=url)
    assert path == cache / "processed.cleveland.data"
    assert sha256(path) == hospital("cleveland").sha256


def test_download_with_wrong_checksum_saves_nothing(mirror, monkeypatch: pytest.MonkeyPatch) -> None:
    url, cache = mirror
    monkeypatch.delenv(ENV_DATA_DIR, raising=False)
    with pytest.raises(ValueError, match="checksum mismatch"):
        hospital_file(hospital("va"), str(cache), allow_download=True, base_url=url)
    assert not (cache / "processed.va.data").exists()
    assert not list(cache.glob(".*"))  # no temp file left


def test_missing_file_without_download_says_where_it_looked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(ENV_DATA_DIR, raising=False)
    with pytest.raises(DataNotFoundError) as err:
        hospital_file(hospital("va"), str(tmp_path), allow_download=False)
    assert str(tmp_path) in str(err.value) and ENV_DATA_DIR in str(err.value)


def test_unreachable_archive_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(ENV_DATA_DIR, raising=False)
    with pytest.raises(DataNotFoundError, match="downloading it from"):
        hospital_file(hospital("va"), str(tmp_path), allow_download=True, base_url="http://127.0.0.1:9/")


def test_environment_variable_beats_config(tmp_path: Path, data_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv(ENV_DATA_DIR, str(data_dir))
    assert hospital_file(hospital("va"), str(tmp_path)) == data_dir / "processed.va.data"


def test_default_config_is_the_project_pipeline() -> None:
    cfg = load_config()
    assert (cfg.protocol, cfg.strategy.name, cfg.model.name, cfg.data.pipeline) == ("project", "fedavg", "logreg",
                                                                                   "project")
    assert cfg.data.hospitals == ["cleveland", "hungarian", "switzerland", "va"]


def test_flamby_protocol_sets_flamby_training() -> None:
    cfg = load_config("protocol=flamby strategy=fedyogi")
    assert (cfg.data.pipeline, cfg.train.lr, cfg.train.batch_size, cfg.train.local_steps, cfg.rounds) == (
        "flamby", 0.001, 4, 100, 15)
    assert cfg.strategy.name == "fedyogi"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [("train.lrr=0.1", "train.lrr"), ("strategy=fedfoo", "strategy/fedfoo"), ("train.lr=abc", "train.lr"),
     ("train.lr=-1", "train.lr"), ("rounds=0", "rounds"), ("train.optimizer=rmsprop", "train.optimizer"),
     ("model=transformer", "model/transformer"), ("data.hospitals=[mars]", "data.hospitals"),
     ("min_replies=9", "min_replies"), ("data.train_fraction=1.5", "data.train_fraction"),
     ("data.pipeline=magic", "data.pipeline"), ("model.dropout=1.0", "model.dropout")],
)
def test_wrong_keys_and_values_are_named(overrides: str, named: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides)
    assert named in str(err.value)


def test_unknown_strategy_parameter_is_named() -> None:
    from server_app.strategies import build_strategy

    with pytest.raises(ConfigError, match=r"strategy\.params\.proximal_muu"):
        build_strategy(load_config("+strategy.params.proximal_muu=0.1"))
    assert type(build_strategy(load_config("strategy=fedprox"))).__name__ == "FedProx"
