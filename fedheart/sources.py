"""Find the UCI hospital files: configured folder, environment variable, or a verified download."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import urllib.request
from pathlib import Path

from fedheart.schema import HOSPITALS, Hospital

log = logging.getLogger(__name__)

ENV_DATA_DIR = "FEDHEART_DATA_DIR"
UCI_BASE_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/heart-disease/"
DEFAULT_CACHE = Path.home() / ".cache" / "fedheart" / "uci-heart-disease"


class DataNotFoundError(FileNotFoundError):
    """The hospital files are not where we looked and may not be downloaded."""


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_dir(configured: str | None) -> tuple[Path, str]:
    """The folder to use and where that choice came from (env var beats config beats cache)."""
    if os.environ.get(ENV_DATA_DIR):
        return Path(os.environ[ENV_DATA_DIR]).expanduser(), f"${ENV_DATA_DIR}"
    if configured:
        return Path(configured).expanduser(), "config data.root"
    return DEFAULT_CACHE, "the default cache"


def download(h: Hospital, dest: Path, base_url: str = UCI_BASE_URL, timeout: float = 60) -> Path:
    """Fetch one hospital file from the UCI archive, verify its SHA-256, then move it into place."""
    dest.mkdir(parents=True, exist_ok=True)
    url = base_url + h.filename
    log.info("Downloading %s from %s", h.filename, url)
    with urllib.request.urlopen(url, timeout=timeout) as response:
        payload = response.read()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != h.sha256:
        raise ValueError(f"checksum mismatch for {url}: got sha256 {digest}, expected {h.sha256}; "
                         "the file was not saved")
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{h.filename}.")
    with os.fdopen(fd, "wb") as out:
        out.write(payload)
    os.replace(tmp, dest / h.filename)
    return dest / h.filename


def hospital_file(h: Hospital, configured: str | None = None, *, allow_download: bool = False,
                  base_url: str = UCI_BASE_URL) -> Path:
    """Path of one hospital's file, downloading (checksum-verified) if absent and allowed."""
    folder, source = data_dir(configured)
    path = folder / h.filename
    if path.is_file():
        return path
    if allow_download:
        try:
            return download(h, folder, base_url)
        except OSError as exc:
            raise DataNotFoundError(
                f"{h.filename} is not in {folder} (from {source}) and downloading it from "
                f"{base_url} failed: {exc}. Put the UCI files there or set ${ENV_DATA_DIR}.") from exc
    raise DataNotFoundError(
        f"{h.filename} ({h.name}) not found in {folder} (from {source}). "
        f"Set ${ENV_DATA_DIR} or data.root to the folder holding the UCI 'processed.*.data' files, "
        f"or allow downloading with data.download=true.")


@functools.lru_cache(maxsize=4)
def _file_names(folder: str, mtime_ns: int) -> tuple[str, ...]:
    """Sorted names of the visible files in ``folder`` (cached while the folder is unchanged)."""
    with os.scandir(folder) as entries:
        return tuple(sorted(e.name for e in entries if e.is_file() and not e.name.startswith(".")))


def partition_file(folder: str | Path, partition: int) -> Path:
    """The ``partition``-th hospital file (sorted by name) of ``folder`` (config ``data.partition_dir``).

    The listing is cached per process: with 1000 files, listing and sorting on every message cost
    more than reading the hospital's own file.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"data.partition_dir {root} is not a folder")
    names = _file_names(str(root), root.stat().st_mtime_ns)
    if not 0 <= partition < len(names):
        raise DataNotFoundError(f"partition {partition} has no file: data.partition_dir {root} holds "
                                f"{len(names)} file(s); run the simulation with at most that many nodes")
    return root / names[partition]


def verify_folder(folder: Path) -> dict[str, bool]:
    """Which of the four files in ``folder`` match the published checksums."""
    return {h.filename: (folder / h.filename).is_file() and sha256(folder / h.filename) == h.sha256
            for h in HOSPITALS}
