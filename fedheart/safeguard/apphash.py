"""Which app is running at the hospital: the FAB hash prefix Flower names its install folder with,
and a SHA-256 over the app's own files as they are on disk here (recorded in the audit trail)."""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

APP_ROOT = Path(__file__).resolve().parents[2]  # the folder holding fedheart/, client_app/, server_app/, conf/
APP_PARTS = ("fedheart", "client_app", "server_app", "conf")
SUFFIXES = (".py", ".yaml", ".toml")
FAB_FOLDER = re.compile(r"^[^.]+\.[^.]+\..+\.([0-9a-f]{8})$")  # Flower: <publisher>.<app>.<version>.<hash[:8]>


def app_files(root: Path = APP_ROOT) -> list[Path]:
    """The app's source and configuration files under ``root`` (sorted)."""
    files = [p for part in APP_PARTS for p in (root / part).rglob("*") if p.is_file() and p.suffix in SUFFIXES
             and "__pycache__" not in p.parts]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def app_digest(root: Path = APP_ROOT) -> str:
    """SHA-256 over every app file's relative path and bytes."""
    digest = hashlib.sha256()
    for path in app_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def app_identity() -> dict[str, str]:
    """``fab``: the FAB hash prefix of Flower's install folder ('' when not run from a FAB), ``sha256``."""
    match = FAB_FOLDER.match(APP_ROOT.name)
    return {"fab": match.group(1) if match else "", "sha256": app_digest()}
