"""Run the federated simulation of the hospitals, end to end, and report the run's real status.

    python -m launcher.simulate [HYDRA_OVERRIDE ...] [--supernodes N] [--policy FILE --state-root DIR]

Starts a private SuperLink (simulation mode, free port, state under .fedheart/), submits the app
with ``flwr run``, streams its progress, checks the final status with ``flwr ls`` (``flwr run``
exits 0 even for failed runs) and stops the SuperLink, also on Ctrl-C or failure.

With ``--policy FILE --state-root DIR`` every simulated hospital follows that policy (checked here
before anything starts) and keeps its lifetime privacy ledger and audit trail in ``DIR/<hospital>``:
Flower sets a simulation's node configs itself, so the SuperLink (whose Ray actors run the
ClientApps and inherit its environment) gets ``$FEDHEART_POLICY`` and ``$FEDHEART_STATE_ROOT``
instead of node-config ``policy-path`` / ``state-dir`` (client_app/gate.py). Without them both
variables are passed empty, so a value left in the caller's environment never applies unseen.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from fedheart.safeguard.policy import PolicyError
from launcher.deploy import NO_POLICY
from launcher.flower import REPO_ROOT, FlowerError, SuperLink, submit_run, wait_for_run
from launcher.safeguards import check_policy, run_exit_code, safeguard_report

ENV_POLICY = "FEDHEART_POLICY"  # the names client_app/gate.py reads (not imported: it pulls in Flower's ClientApp)
ENV_STATE_ROOT = "FEDHEART_STATE_ROOT"


def safeguard_env(policy: Path | None = None, state_root: Path | None = None) -> dict[str, str]:
    """The SuperLink's environment for the hospitals' policy and state folders (absolute; empty: none)."""
    return {ENV_POLICY: str(Path(policy).expanduser().resolve()) if policy else "",
            ENV_STATE_ROOT: str(Path(state_root).expanduser().resolve()) if state_root else ""}


def state_dirs(state_root: Path) -> dict[str, Path]:
    """The hospitals' state folders under ``state_root`` (named as the ClientApp names its hospital)."""
    root = Path(state_root)
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir()} if root.is_dir() else {}


def run_simulation(overrides: list[str], supernodes: int, workdir: Path, stream: bool = True,
                   policy: Path | None = None, state_root: Path | None = None) -> dict:
    """One simulation on a fresh SuperLink; returns the ``flwr ls`` record of the run.

    ``policy``/``state_root``: every hospital's policy file and the root of their state folders
    (passed to the SuperLink as $FEDHEART_POLICY / $FEDHEART_STATE_ROOT)."""
    with SuperLink(workdir, extra_env=safeguard_env(policy, state_root)) as link:
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
    parser.add_argument("--policy", type=Path, metavar="FILE",
                        help="every hospital's policy file (YAML, see docs/privacy.md), passed as $FEDHEART_POLICY; "
                             "checked before anything starts; needs --state-root")
    parser.add_argument("--state-root", type=Path, metavar="DIR",
                        help="hospital state folders DIR/<hospital> (lifetime privacy ledger and audit trail, "
                             "kept across runs), passed as $FEDHEART_STATE_ROOT")
    args = parser.parse_args(argv)
    rules = None
    if args.policy is not None:
        try:
            args.policy, rules = check_policy(args.policy)
        except PolicyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.state_root is None:
            print("error: --policy needs --state-root DIR: each hospital keeps its lifetime privacy ledger and "
                  "audit trail in DIR/<hospital>", file=sys.stderr)
            return 2
    state_root = args.state_root.expanduser().resolve() if args.state_root is not None else None
    if state_root is not None and state_root.exists() and not state_root.is_dir():
        print(f"error: --state-root {state_root} is not a folder", file=sys.stderr)
        return 2
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
    print(f"Hospital policy: {args.policy}" if args.policy else NO_POLICY)
    if state_root is not None:
        print(f"Hospital state (ledger, audit trail): {state_root}/<hospital>")
    try:
        record = run_simulation(args.overrides, supernodes, workdir, policy=args.policy, state_root=state_root)
    except FlowerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: SuperLink stopped", file=sys.stderr)
        return 130
    status = record.get("status")
    print(f"\nRun {record.get('run-id')}: {status} in {record.get('elapsed', 0):.0f}s "
          f"(logs: {workdir})")
    intact = True
    if state_root is not None:
        hospitals = state_dirs(state_root)
        lines, intact = safeguard_report(hospitals, str(record.get("run-id")),
                                         dict.fromkeys(hospitals, rules) if rules else None)
        print(f"Hospital safeguards ({state_root}/<hospital>):")
        print("\n".join(lines) if lines else "  no hospital state written")
    return run_exit_code(record, intact)


if __name__ == "__main__":
    sys.exit(main())
