"""Shared fixtures: the real UCI files from ../shared, and one simulation SuperLink per session."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedheart.schema import HOSPITALS
from launcher.flower import REPO_ROOT, SuperLink, submit_run, wait_for_run

DATA_DIR = Path(os.environ.get("FEDHEART_TEST_DATA", REPO_ROOT.parent / "shared" / "data" / "uci-heart-disease"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real, read-only UCI hospital files (never copied into the repo)."""
    missing = [h.filename for h in HOSPITALS if not (DATA_DIR / h.filename).is_file()]
    if missing:
        pytest.fail(f"UCI files {missing} not found in {DATA_DIR}; set FEDHEART_TEST_DATA")
    return DATA_DIR


@pytest.fixture(scope="session")
def flamby_split(data_dir: Path) -> Path:
    return data_dir / "flamby_split.csv"


@dataclass
class SimulationRun:
    record: dict
    run_dir: Path

    @property
    def status(self) -> str:
        return str(self.record["status"])

    @property
    def summary(self) -> dict:
        return json.loads((self.run_dir / "summary.json").read_text())


class Simulation:
    """Runs the app on one shared simulation SuperLink; each run writes under ``outputs``."""

    def __init__(self, link: SuperLink, outputs: Path) -> None:
        self.link = link
        self.outputs = outputs

    def run(self, *overrides: str, supernodes: int = 4, timeout: float = 600) -> SimulationRun:
        name = f"t{len(list(self.outputs.glob('*')))}"
        run_id = submit_run(self.link, overrides=[*overrides, f"output.run_name={name}"], stream=False,
                            echo=None, federation={"num-supernodes": supernodes,
                                                   "client-resources-num-cpus": 1})
        record = wait_for_run(self.link, run_id, timeout=timeout)
        return SimulationRun(record, self.outputs / name)


@pytest.fixture(scope="session")
def simulation(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Simulation]:
    """One real SuperLink in simulation mode for all end-to-end simulation tests."""
    work = tmp_path_factory.mktemp("simulation")
    outputs = work / "outputs"
    link = SuperLink(work, extra_env={"FEDHEART_DATA_DIR": str(data_dir), "FEDHEART_OUTPUT_DIR": str(outputs)})
    link.start()
    try:
        yield Simulation(link, outputs)
    finally:
        link.stop()
