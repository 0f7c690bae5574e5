"""Fixtures shared by the end-to-end modules: one real local deployment for the whole session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fedheart.schema import HOSPITALS
from launcher.deploy import Deployment


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Deployment]:
    """A TLS SuperLink with SuperNode authentication and one SuperNode per UCI hospital
    (launcher.deploy.Deployment), shared by tests/e2e/test_deployment.py and test_faults.py.

    A module that injects faults must leave it as it found it: every SuperNode running and online.
    """
    work = tmp_path_factory.mktemp("deployment")
    files = {h.key: data_dir / h.filename for h in HOSPITALS}
    with Deployment(work / "state", files, work / "outputs") as deployed:
        yield deployed
