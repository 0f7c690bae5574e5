"""Run the federated simulation of the hospitals, end to end, and report the run's real status.

    python -m launcher.simulate [HYDRA_OVERRIDE ...] [--supernodes N]

Starts a private SuperLink (simulation mode, free port, state under .fedheart/), submits the app
with ``flwr run``, streams its progress, checks the final status with ``flwr ls`` (``flwr run``
exits 0 even for failed runs) and stops the SuperLink, also on Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from launcher.flower import REPO_ROOT, FlowerError, SuperLink, submit_run, wait_for_run


def run_simulation(overrides: list[str], supernodes: int, workdir: Path, stream: bool = True) -> dict:
    """One simulation on a fresh SuperLink; returns the ``flwr ls`` record of the run."""
    with SuperLink(workdir) as link:
        run_id = submit_run(link, overrides=overrides, stream=stream,
                            federation={"num-supernodes": supernodes, "client-resources-num-cpus": 1})
        return wait_for_run(link, run_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. strategy=fedprox rounds=5")
    parser.add_argument("--supernodes", type=int, default=None,
                        help="simulated hospitals (default: the number in data.hospitals)")
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / ".fedheart" / "simulation",
                        help="SuperLink state and logs")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill` stops the SuperLink too
    supernodes = args.supernodes
    if supernodes is None:
        from fedheart.config import ConfigError, load_config

        try:
            supernodes = len(load_config(args.overrides).data.hospitals)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    workdir = args.workdir / time.strftime("%Y%m%d-%H%M%S")
    try:
        record = run_simulation(args.overrides, supernodes, workdir)
    except FlowerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: SuperLink stopped", file=sys.stderr)
        return 130
    status = record.get("status")
    print(f"\nRun {record.get('run-id')}: {status} in {record.get('elapsed', 0):.0f}s "
          f"(logs: {workdir})")
    if status != "finished:completed":
        print(f"error: the run did not complete: {record.get('status-details')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
