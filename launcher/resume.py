"""Continue an interrupted run from its checkpoint, with one command (after the SuperLink, its machine or
the ServerApp died).

    python -m launcher.resume RUN_DIR [--stop] [--wait S] [--flwr-home DIR] [--connection NAME]
                              [--app DIR] [--run-id ID] [OVERRIDE ...]

RUN_DIR is the run's folder as the ServerApp sees it (``checkpoint.pt``, ``tracking.json``). The command
finds the Flower run that started the folder (``tracking.json``, or ``--run-id`` where the folder is not
readable here, e.g. on a pod's volume) and reads that run's overrides from the SuperLink, whose state
database keeps them across a restart. Every run of the folder the SuperLink still counts unfinished is
waited for (``--wait``; the SuperLink fails a run whose ServerApp stopped sending heartbeats) or, with
``--stop``, stopped (``flwr stop``): a ServerApp that died with the SuperLink's machine never reports
back, and one that survived must not write the folder beside the resumed one. Then it submits the app
again (``--app``, by default this checkout; its bundle must hash like the interrupted run's, which the
hospitals approved) with the same overrides plus ``resume=RUN_DIR`` (``OVERRIDE ...`` replace those of
the same key, e.g. ``rounds=20``), and follows the new run to its end: exit 0 only for
``finished:completed``, 1 for another end, 2 for a problem found before anything was submitted.

The connection is the one ``flwr`` uses: ``--connection`` (default: the default one) of
``--flwr-home`` (default ``$FLWR_HOME``, else ``~/.flwr``). docs/reliability.md, docs/deploy-eks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

from launcher.fab import AppHashError, app_hash
from launcher.flower import (
    FINISHED,
    REPO_ROOT,
    FlowerError,
    SuperLink,
    flwr_json,
    submit_run,
    wait_for_run,
    wait_until,
)

COMPLETED = "finished:completed"
TRACKING_FILE = "tracking.json"  # fedheart.tracking: {"experiment": ..., "run_id": the run that began the folder}


def connection(flwr_home: Path, name: str | None, workdir: Path) -> SuperLink:
    """A handle on the SuperLink behind connection ``name`` of ``flwr_home/config.toml`` (default: its
    default connection) for :mod:`launcher.flower`'s commands; run-config files go to ``workdir``."""
    config = flwr_home / "config.toml"
    try:
        superlinks = tomllib.loads(config.read_text()).get("superlink", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FlowerError(f"{config}: no readable Flower configuration ({exc})") from None
    name = name or superlinks.get("default")
    if not name or name not in superlinks:
        raise FlowerError(f"{config}: no SuperLink connection {name!r} (connections: "
                          f"{', '.join(k for k in superlinks if k != 'default') or 'none'})")
    # extra_env's FLWR_HOME wins over the handle's own $FLWR_HOME (launcher.flower.flower_env).
    return SuperLink(workdir, simulation=False, connection=name, extra_env={"FLWR_HOME": str(flwr_home)})


def runs(link: SuperLink) -> dict[str, Any]:
    """Every run the SuperLink knows, by run id (flwr's ``Run``: status and override config, which
    ``flwr ls`` does not print), through Flower's own Control API client."""
    from flwr.cli.flower_config import read_superlink_connection
    from flwr.cli.utils import init_http_client_from_connection
    from flwr.common.serde import run_from_proto
    from flwr.proto.control_pb2 import ListRunsRequest  # pylint: disable=E0611

    with mock.patch.dict(os.environ, {"FLWR_HOME": link.env["FLWR_HOME"]}):
        try:
            client = init_http_client_from_connection(read_superlink_connection(link.connection))
            try:
                response = client.ListRuns(ListRunsRequest())
            finally:
                client.close()
        except Exception as exc:  # httpx, TLS or click errors from Flower's client: name the connection
            raise FlowerError(f"cannot list the runs of SuperLink connection {link.connection!r} "
                              f"({link.env['FLWR_HOME']}/config.toml): {exc}") from None
    return {str(run_id): run_from_proto(proto) for run_id, proto in response.run_dict.items()}


def status(run: Any) -> str:
    """``finished:completed``, ``running``, ... as ``flwr ls`` shows it."""
    return f"{run.status.status}:{run.status.sub_status}" if run.status.sub_status else run.status.status


def overrides_of(run: Any) -> list[str]:
    from fedheart.config import parse_overrides

    return parse_overrides(str(run.override_config.get("overrides", "")))


def merged(original: Sequence[str], changes: Sequence[str]) -> list[str]:
    """``original`` overrides with each of ``changes`` replacing the one of the same key (or added)."""
    out = {item.split("=", 1)[0].lstrip("+~"): item for item in original}
    out.update({item.split("=", 1)[0].lstrip("+~"): item for item in changes})
    return list(out.values())


def first_run_id(run_dir: Path) -> str:
    path = run_dir / TRACKING_FILE
    try:
        return str(json.loads(path.read_text())["run_id"])
    except (OSError, ValueError, KeyError) as exc:
        raise FlowerError(f"{path}: cannot read the id of the run that began this folder ({exc}); "
                          "give --run-id") from None


def of_folder(known: dict[str, Any], first: str, run_dir: str) -> list[str]:
    """The runs that wrote ``run_dir``: the first, and every later one that resumed it."""
    return [rid for rid, run in known.items()
            if rid == first or any(o == f"resume={run_dir}" for o in overrides_of(run))]


def resume(link: SuperLink, run_dir: str | Path, *, app_dir: Path = REPO_ROOT, run_id: str | None = None,
           changes: Sequence[str] = (), stop: bool = False, wait: float = 120, echo: Any = print) -> str:
    """Submit the continuation of ``run_dir`` (see the module docstring); returns the new run's id."""
    from fedheart.runs import load_checkpoint

    folder = Path(run_dir).expanduser()
    local = folder.is_dir()
    if local:
        folder = folder.resolve()
        state = load_checkpoint(folder)  # a clear error for a missing or unreadable checkpoint
        echo(f"{folder}: checkpoint of round {int(state['round'])}")
    elif run_id is None:
        raise FlowerError(f"{folder} is not a folder here: give --run-id (the run that began it) to resume it "
                          "where only the ServerApp sees it")
    first = run_id or first_run_id(folder)
    known = runs(link)
    if first not in known:
        raise FlowerError(f"the SuperLink knows no run {first} (the run that began {folder}): was its state "
                          "database lost? See docs/deploy-eks.md, 'When the SuperLink restarts'")
    bundle = app_hash(app_dir)
    if bundle != known[first].fab_hash:
        raise FlowerError(f"{app_dir} bundles to {bundle}, run {first} ran {known[first].fab_hash}: resume with the "
                          "release the hospitals approved (--app)")
    mine = of_folder(known, first, str(folder))
    for rid in mine:
        if status(known[rid]).startswith(FINISHED):
            continue
        if stop:
            echo(f"run {rid} is {status(known[rid])}: stopping it")
            try:
                flwr_json(link, "stop", rid)
            except FlowerError:  # it may have finished meanwhile (its ServerApp's heartbeats stopped)
                if not status(runs(link)[rid]).startswith(FINISHED):
                    raise
        else:
            echo(f"run {rid} is {status(known[rid])}: waiting up to {wait:g} s for the SuperLink to finish it")

        def finished(rid: str = rid) -> bool:
            return status(runs(link)[rid]).startswith(FINISHED)

        wait_until(finished, wait, f"run {rid} finishes (give --stop to stop it)", max_delay=3.0)
    overrides = merged([o for o in overrides_of(known[first]) if not o.startswith("resume=")],
                       [*changes, f"resume={folder}"])
    new = submit_run(link, overrides=overrides, app_dir=app_dir, stream=False, echo=None)
    echo(f"run {new} continues {folder}: {' '.join(overrides)}")
    return new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="the interrupted run's folder, as the ServerApp sees it")
    parser.add_argument("overrides", nargs="*", help="overrides replacing the original ones of the same key")
    parser.add_argument("--stop", action="store_true",
                        help="stop the folder's runs the SuperLink still counts running instead of waiting for them")
    parser.add_argument("--wait", type=float, default=120, help="seconds to wait for them to finish (default 120)")
    parser.add_argument("--flwr-home", type=Path,
                        default=Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr"))
    parser.add_argument("--connection", help="the SuperLink connection (default: the default one)")
    parser.add_argument("--app", type=Path, default=REPO_ROOT, help="the app folder the run was submitted from")
    parser.add_argument("--run-id", help="the run that began the folder (default: from its tracking.json)")
    parser.add_argument("--timeout", type=float, default=24 * 3600, help="seconds to follow the new run")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fedheart-resume-") as tmp:
        try:
            link = connection(args.flwr_home.expanduser(), args.connection, Path(tmp))
            new = resume(link, args.run_dir, app_dir=args.app, run_id=args.run_id, changes=args.overrides,
                         stop=args.stop, wait=args.wait)
        except (FlowerError, AppHashError, FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            record = wait_for_run(link, new, timeout=args.timeout)
        except FlowerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"run {new}: {record.get('status')} ({time.monotonic() - started:.0f} s after this command started)")
    if record.get("status") != COMPLETED:
        print(f"error: the resumed run did not complete: {record.get('status-details')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
