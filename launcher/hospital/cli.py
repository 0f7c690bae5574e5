"""``python -m launcher.hospital``: options, start-up checks, the warm parent's imports, then the loop."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launcher.hospital.approval import hospital_safeguards
from launcher.hospital.errors import EXIT_CONFIG, EXIT_STOPPED, LauncherError, Stop
from launcher.hospital.loop import HospitalLauncher
from launcher.hospital.warm import DEFAULT_PRELOAD, freeze_heap, preload

log = logging.getLogger("fedheart.launcher.hospital")
DESCRIPTION = "The hospital's launcher: runs only approved apps, each message in a child forked from a warm parent."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m launcher.hospital", description=DESCRIPTION)
    parser.add_argument("--runtime-api-address", required=True, metavar="HOST:PORT",
                        help="the SuperNode's Runtime API (its --host/--port; started with --isolation process)")
    parser.add_argument("--policy", required=True, type=Path, help="the hospital's policy file (approved-apps)")
    parser.add_argument("--state-dir", required=True, type=Path, help="the hospital's state folder (audit trail)")
    parser.add_argument("--poll-interval", type=float, default=0.1, help="seconds between AcquireTask polls")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--insecure", action="store_true", help="plain HTTP to the Runtime API (loopback only)")
    tls.add_argument("--root-certificates", type=Path, help="CA of the Runtime API's TLS certificate")
    parser.add_argument("--superexec-auth-secret-file", type=Path,
                        help="the SuperNode's --superexec-auth-secret-file (signs AcquireTask)")
    parser.add_argument("--patience", type=float, default=30.0,
                        help="exit 1 once the Runtime API has not answered for this many seconds")
    parser.add_argument("--grace", type=float, default=10.0,
                        help="seconds running tasks have to finish after SIGTERM before they are killed")
    parser.add_argument("--flwr-home", type=Path,
                        help="where approved bundles are installed (default: a fresh private folder, removed at exit)")
    parser.add_argument("--preload", default=",".join(DEFAULT_PRELOAD),
                        help="comma-separated modules the warm parent imports ('none': none)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s hospital-launcher[%(process)d]: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    own_home = None

    def stop_early(_signum: int, _frame: Any) -> None:
        raise Stop

    for sig in (signal.SIGTERM, signal.SIGINT):  # while starting (preloading takes seconds)
        signal.signal(sig, stop_early)
    try:
        if not 0.01 <= args.poll_interval <= 60:
            raise LauncherError(f"--poll-interval {args.poll_interval}: must be between 0.01 and 60 seconds")
        safeguards = hospital_safeguards()
        policy_path = args.policy.expanduser().resolve()
        try:
            policy = safeguards.load_policy(policy_path)
        except safeguards.policy_error as exc:
            raise LauncherError(str(exc)) from None
        if not policy.approved_apps:
            log.warning("%s approves no app (approved-apps): every task will be refused", policy_path)
        state_dir = args.state_dir.expanduser().resolve()
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        certificates = args.root_certificates.expanduser().read_bytes() if args.root_certificates else None
        secret = args.superexec_auth_secret_file.expanduser().read_bytes() if args.superexec_auth_secret_file else None
        if secret == b"":
            raise LauncherError(f"{args.superexec_auth_secret_file}: empty SuperExec auth secret")
        if args.flwr_home:
            home = args.flwr_home.expanduser().resolve()
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
        else:
            home = own_home = Path(tempfile.mkdtemp(prefix="fedheart-launcher-flwr-home-"))
        os.environ["FLWR_HOME"] = str(home)  # the children install approved bundles here, and only there
        modules = [m.strip() for m in args.preload.split(",") if m.strip() and args.preload.strip().lower() != "none"]
        started = time.monotonic()
        loaded = preload(modules)
        frozen = freeze_heap()
        log.info("warm parent ready: %d modules preloaded in %.1fs (%d objects frozen), FLWR_HOME %s", len(loaded),
                 time.monotonic() - started, frozen, home)
        launcher = HospitalLauncher(args.runtime_api_address, policy_path, state_dir, insecure=args.insecure,
                                    root_certificates=certificates, superexec_auth_secret=secret,
                                    poll_interval=args.poll_interval, patience=args.patience, grace=args.grace,
                                    safeguards=safeguards)
        return launcher.run()
    except (LauncherError, OSError) as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    except Stop:  # SIGTERM or Ctrl-C while starting
        return EXIT_STOPPED
    finally:
        if own_home is not None:
            shutil.rmtree(own_home, ignore_errors=True)
