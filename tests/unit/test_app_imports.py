"""The Flower app modules stay light to import (see server_app/app.py and client_app/app.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "pandas", "sklearn", "scipy", "matplotlib", "hydra", "opacus")


def test_app_modules_import_only_flower() -> None:
    """Flower imports them under a process-wide lock and, in a simulation, before Ray starts: torch,
    pandas or scikit-learn here would delay every simulation by seconds (bench/results/perf)."""
    code = ("import sys, server_app.app, client_app.app; "
            f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules); "
            "assert not heavy, heavy; "
            "assert server_app.app.app is not None and client_app.app.app is not None")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_handlers_are_what_brings_torch() -> None:
    """The check above is not vacuous: the hospital's handlers do import the heavy libraries."""
    code = ("import sys, client_app.handlers; "
            "assert {'torch', 'pandas', 'sklearn'} <= set(sys.modules), 'handlers import no heavy library'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
