"""`fedheart app-hash` prints the hash a hospital approves: the SHA-256 of the FAB `flwr run` builds."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk

from fedheart_cli.main import main
from launcher.flower import REPO_ROOT


def test_app_hash_of_the_app_folder_is_the_sha256_of_its_fab(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    fab = tmp_path / "app.fab"
    fab.write_bytes(build_fab_from_disk(REPO_ROOT))
    assert main(["app-hash", str(REPO_ROOT), str(fab)]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = hashlib.sha256(fab.read_bytes()).hexdigest()
    assert [line.split()[0] for line in lines] == [expected, expected]
