"""What a forked child does faster than ``flwr-clientapp``, without trusting more: an approved bundle
installed once per hash (then checked file by file for every task), and prompt pulls of the message.

Flower's ``run_clientapp`` unpacks the whole bundle into a temporary folder for every message, re-hashes
it and re-reads its pyproject.toml before it finds the installed copy by name (and then uses that copy
unchecked); Python then compiles the app's modules again in every fresh child. Here the first child of
a hash installs it with Flower's own ``install_from_fab`` into a staging folder, compiles it, moves it
into place, makes it read-only and records the SHA-256 of every file it holds
(``FLWR_HOME/.bundles/HASH.json``, outside the app's folder). Every later task of that hash only
re-hashes the installed files against that record (a few milliseconds); any file added, removed or
changed, or no record, and the folder is installed afresh. The bundle a task's input carries must
hash to the approved ``fab_hash`` of its task, or the task fails naming both hashes.

Flower's child also pulls the message's parts with a backoff that starts at 1 s: a child forked
within milliseconds of the message's arrival asks for its parts while the SuperNode still fetches them
from the SuperLink, and waited ~1 s for parts that came a few ms later. :func:`quicken_object_pulls`
retries every :data:`OBJECT_PULL_BACKOFF` seconds (doubling up to :data:`OBJECT_PULL_BACKOFF_CAP`).
"""

from __future__ import annotations

import compileall
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

OBJECT_PULL_BACKOFF = 0.05  # s before the first retry of a message part the SuperNode does not hold yet
OBJECT_PULL_BACKOFF_CAP = 0.25  # s, the longest wait between two retries
RECORDS = ".bundles"  # FLWR_HOME/.bundles: the launcher's records of installed bundles, and their lock


class BundleError(RuntimeError):
    """The bundle a task carries is not the approved one (the message names both hashes)."""


def quicken_object_pulls(module: ModuleType) -> None:
    """Have ``module``'s ``pull_and_inflate_object_from_tree`` (looked up by Flower's ``pull_task_input``
    when called) retry unavailable message parts after :data:`OBJECT_PULL_BACKOFF` s instead of 1 s."""
    original = module.pull_and_inflate_object_from_tree
    module.pull_and_inflate_object_from_tree = functools.partial(
        original, initial_backoff=OBJECT_PULL_BACKOFF, backoff_cap=OBJECT_PULL_BACKOFF_CAP)


def tree_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative path (links are refused as files)."""
    found: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[path.relative_to(folder).as_posix()] = "symlink"
        elif path.is_file():
            found[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _record(home: Path, fab_hash: str) -> Path:
    return home / RECORDS / f"{fab_hash}.json"


@contextlib.contextmanager
def _install_lock(home: Path) -> Iterator[None]:
    records = home / RECORDS
    records.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (records / "lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _set_writable(folder: Path, writable: bool) -> None:
    """Owner-writable or read-only for everyone: files 0644/0444, folders 0755/0555."""
    if not folder.exists():
        return
    dirs = [folder, *(p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink())]
    if writable:
        for d in dirs:
            d.chmod(0o755)
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o644 if writable else 0o444)
    if not writable:
        for d in reversed(dirs):
            d.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)


def _remove(folder: Path) -> None:
    _set_writable(folder, True)
    shutil.rmtree(folder, ignore_errors=True)


def installed_intact(home: Path, fab_hash: str, app_dir: Path) -> bool:
    """Whether ``app_dir`` holds exactly the files recorded when ``fab_hash`` was installed there."""
    try:
        recorded = json.loads(_record(home, fab_hash).read_text())
    except (OSError, ValueError):
        return False
    return recorded.get("app_dir") == str(app_dir) and app_dir.is_dir() and tree_digests(app_dir) == recorded.get(
        "files")


def install_approved(fab_content: bytes, skip_prompt: bool = True, *, approved_hash: str,
                     home: Path | None = None) -> Path:
    """Flower's ``install_from_fab(content, skip_prompt=True)`` for an approved bundle: the installed
    folder (``FLWR_HOME/apps/<publisher>.<name>.<version>.<hash[:8]>``), installed once per hash and
    checked against its record for every task (see the module's docstring)."""
    from flwr.cli.install import install_from_fab
    from flwr.supercore.utils import get_flwr_home

    digest = hashlib.sha256(fab_content).hexdigest()
    if digest != approved_hash.lower():
        raise BundleError(f"the task's bundle hashes to {digest}, not to its approved app {approved_hash}")
    home = Path(home or get_flwr_home())
    with _install_lock(home):
        record = _record(home, digest)
        with contextlib.suppress(OSError, ValueError):
            app_dir = Path(json.loads(record.read_text())["app_dir"])
            if installed_intact(home, digest, app_dir):
                return app_dir
        record.unlink(missing_ok=True)
        for left in (home / RECORDS).glob("staging-*"):  # an install killed midway (this lock is free now)
            _remove(left)
        staging = home / RECORDS / f"staging-{os.getpid()}"
        try:
            staged = install_from_fab(fab_content, install_dir=staging, skip_prompt=skip_prompt)
            compileall.compile_dir(str(staged), quiet=2, workers=1)  # compiles only: nothing of it runs
            app_dir = home / staged.relative_to(staging)
            _remove(app_dir)  # a folder by that name without a valid record: never trusted
            app_dir.parent.mkdir(parents=True, exist_ok=True)
            staged.rename(app_dir)
        finally:
            _remove(staging)
        _set_writable(app_dir, False)
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"app_dir": str(app_dir), "files": tree_digests(app_dir)}))
        os.replace(tmp, record)
        return app_dir


def install_once(module: ModuleType, approved_hash: str) -> None:
    """Have ``module``'s ``install_from_fab`` (looked up by Flower's ``run_clientapp`` when called)
    install only the approved bundle, once per hash (:func:`install_approved`)."""
    replacement: Any = functools.partial(install_approved, approved_hash=approved_hash)
    module.install_from_fab = replacement
