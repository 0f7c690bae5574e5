"""The app bundle (FAB) that `flwr run` ships to every SuperNode holds the app and its configs, and only
them (pyproject.toml's ``fab-include``)."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_disk

# Flower's FAB builder uses a pattern class that pathspec deprecates (142 warnings per build).
pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fedheart", "server_app", "client_app", "conf")


def _fab_names() -> list[str]:
    with zipfile.ZipFile(io.BytesIO(build_fab_from_disk(ROOT))) as fab:
        return fab.namelist()


def test_the_fab_holds_every_file_of_the_app_and_nothing_else() -> None:
    names = set(_fab_names())
    assert {n.split("/")[0] for n in names} == {*PACKAGES, "pyproject.toml", ".info"}
    # Flower drops file types it does not ship (e.g. .csv) without a word: every app file must be there.
    app_files = {p.relative_to(ROOT).as_posix() for package in PACKAGES for p in (ROOT / package).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts}
    assert app_files - names == set(), "app files Flower would not ship"


def test_the_app_runs_from_the_fab_alone(tmp_path: Path) -> None:
    """Unpacked on its own, the FAB's modules import and its configs compose (what a SuperNode does)."""
    with zipfile.ZipFile(io.BytesIO(build_fab_from_disk(ROOT))) as fab:
        fab.extractall(tmp_path)
    code = ("import sys, client_app.handlers, server_app.federation\n"
            "from fedheart.config import load_config\n"
            "cfg = load_config('rounds=2')\n"
            "assert cfg.rounds == 2\n"
            f"ours = [m for m in sys.modules.values() if m.__name__.split('.')[0] in {PACKAGES!r}]\n"
            "outside = [m.__name__ for m in ours if not (m.__file__ or '').startswith(sys.argv[1])]\n"
            "assert len(ours) > 20 and not outside, outside\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
