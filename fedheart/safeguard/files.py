"""Crash- and concurrency-safe files of a hospital's state folder: write, fsync, rename; one lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from fedheart.runs import atomic_write_bytes

LOCK_FILE = ".lock"


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Hold the state folder's exclusive lock (``flock``; released when the process dies)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def replace_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data`` and make the rename durable (the folder is fsynced)."""
    atomic_write_bytes(path, data)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
