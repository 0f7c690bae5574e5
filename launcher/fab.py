"""The hash a hospital approves: the SHA-256 of an app's bundle (FAB), as every SuperNode sees it.

    python -m launcher.fab APP_DIR_OR_FAB [...]     # prints "HASH  PATH" per argument (sha256sum style)

For an app folder the hash is the SHA-256 of the bundle Flower builds from it
(``flwr.cli.build.build_fab_from_disk``): the very bytes ``flwr run APP_DIR`` sends to the SuperLink
and every SuperNode receives, hence the ``fab_hash`` of each task the SuperNode hands to its
launcher (``launcher.hospital``). For a ``.fab`` file (``flwr build``) it is the SHA-256 of its
bytes. The bundle holds only the files pyproject.toml's ``fab-include`` lists, with a fixed date
and in sorted order, so the same files give the same hash on any machine; any changed byte in a
shipped file (or in pyproject.toml) gives another hash. See docs/security.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import warnings
import zipfile
from pathlib import Path


class AppHashError(ValueError):
    """The path is neither an app folder Flower can bundle nor a ``.fab`` file; the message says why."""


def fab_bytes(path: str | Path) -> bytes:
    """The bundle's bytes: built from an app folder the way ``flwr run`` builds it, or read from a ``.fab``."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix != ".fab":
            raise AppHashError(f"{p}: not an app folder or a .fab file")
        return p.read_bytes()
    if not p.is_dir():
        raise AppHashError(f"{p}: no such app folder or .fab file")
    if not (p / "pyproject.toml").is_file():
        raise AppHashError(f"{p}: not a Flower app folder (no pyproject.toml)")
    from flwr.cli.build import build_fab_from_disk  # Flower's own builder: the bytes `flwr run` sends

    with warnings.catch_warnings():  # Flower's pattern class is deprecated by pathspec (one warning per file)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return build_fab_from_disk(p)
        except ValueError as exc:  # also Flower's AppPathDepthError
            raise AppHashError(f"{p}: Flower cannot bundle this app: {exc}") from None


def app_hash(path: str | Path) -> str:
    """SHA-256 (64 lowercase hex digits) of the app's bundle: what a hospital lists in ``approved-apps``."""
    return hashlib.sha256(fab_bytes(path)).hexdigest()


def snapshot_app(source: str | Path, dest: str | Path) -> Path:
    """Write the files of ``source``'s bundle (exactly those ``flwr run`` would ship, without Flower's
    ``.info`` manifest) into the new folder ``dest`` and return it. Submitting the snapshot runs the app
    as it was now, whatever is edited in ``source`` later; it hashes like ``source`` did."""
    out = Path(dest)
    out.mkdir(parents=True)
    with zipfile.ZipFile(io.BytesIO(fab_bytes(source))) as bundle:
        for name in bundle.namelist():
            if not name.startswith(".info/"):
                bundle.extract(name, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.fab", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="APP_DIR_OR_FAB", help="an app folder or a .fab file")
    args = parser.parse_args(argv)
    code = 0
    for path in args.paths:
        try:
            print(f"{app_hash(path)}  {path}")
        except (AppHashError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = 2
    return code


if __name__ == "__main__":
    sys.exit(main())
