"""Deploy the federation for real on this machine: TLS, authenticated SuperNodes, one per hospital.

    python -m launcher.deploy [--rounds N] [--data-dir DIR] [--output-dir DIR] [--certs DIR]
                              --policy FILE --state-root DIR [--launcher hospital|flower] [HYDRA_OVERRIDE ...]

Generates a CA, a server certificate (SANs localhost, 127.0.0.1, ::1) and one EC P-384 key pair per
hospital (launcher.certs; or, with ``--certs DIR``, uses that folder's material once checked: files
present, certificates in date, server certificate signed by the CA); starts ``flower-superlink``
with TLS and ``--enable-supernode-auth`` on 127.0.0.1, and in front of it the fleet proxy (nginx,
launcher.proxy), which serves only the Fleet API and /health; registers each hospital's public key
(``flwr supernode register``, on the SuperLink's loopback address: the Control API is never served by the
proxy); starts one ``flower-supernode`` per hospital that dials the proxy, trusts only the project CA,
signs in with its own key and reads only its own file (``--node-config "data-path='...'
hospital='...'"``); then ``flwr run . <connection>`` (loopback again), streams progress, checks the
real status with ``flwr ls`` and stops every process, also on Ctrl-C or failure. All processes listen
on loopback on free ports. Exit code 0 only for
``finished:completed`` (and, with ``--state-root``, every hospital's audit trail intact).

With ``--policy FILE --state-root DIR`` every hospital's SuperNode also gets ``policy-path='FILE'``
(its policy, checked here before anything starts) and ``state-dir='DIR/<hospital>'`` (its lifetime
privacy ledger and audit trail, client_app/gate.py); the end of the output shows each hospital's
``fedheart audit verify`` result and privacy budget.

``--launcher hospital`` (the default): each SuperNode runs with ``--isolation process`` and, beside
it, the hospital's launcher (``python -m launcher.hospital``, docs/security.md) on its loopback
Runtime API, with the SuperNode's policy file and state folder and a SuperExec auth secret shared by
the two: only apps whose bundle hash the policy lists in ``approved-apps`` run, each message in a
child forked from a warm parent. The output names the hash of the app it submits
(``launcher.fab.app_hash``) and warns about every policy that does not approve it. The launcher
needs a policy: without ``--policy`` the command refuses to start (exit 2). ``--launcher flower``:
Flower's stock SuperExec in each SuperNode (``--isolation subprocess``), which runs any app it is
sent; without ``--policy`` the aggregator then decides every privacy setting, and the output says so.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedheart.safeguard.policy import PolicyError
from launcher.certs import CertError, verify_material
from launcher.deploy import LAUNCHERS, NEEDS_APPROVAL, NO_POLICY, Deployment
from launcher.fab import AppHashError
from launcher.flower import REPO_ROOT, FlowerError
from launcher.safeguards import check_policy, run_exit_code


def hospital_files(overrides: Sequence[str], data_dir: Path | None = None) -> tuple[dict[str, Path], Any]:
    """The configured hospitals' files: in ``data_dir`` if given, else found by fedheart.sources
    ($FEDHEART_DATA_DIR, data.root, or a verified download). Also returns the configuration."""
    from fedheart.config import load_config
    from fedheart.schema import hospital
    from fedheart.sources import DataNotFoundError, hospital_file

    cfg = load_config(list(overrides))
    if cfg.min_hospitals > len(cfg.data.hospitals):
        raise FlowerError(f"min_hospitals={cfg.min_hospitals} but data.hospitals lists only "
                          f"{len(cfg.data.hospitals)}: the run would wait forever; add min_hospitals="
                          f"{len(cfg.data.hospitals)}")
    if data_dir is None:
        return {key: hospital_file(hospital(key), cfg.data.root, allow_download=cfg.data.download)
                for key in cfg.data.hospitals}, cfg
    files = {key: data_dir / hospital(key).filename for key in cfg.data.hospitals}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise DataNotFoundError(f"--data-dir {data_dir} lacks {', '.join(missing)}")
    return files, cfg


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. strategy=fedprox train.lr=0.02")
    parser.add_argument("--rounds", type=int, help="federated rounds (same as the override rounds=N)")
    parser.add_argument("--data-dir", type=Path,
                        help="folder holding the UCI processed.*.data files (default: $FEDHEART_DATA_DIR, "
                             "data.root, else a verified download)")
    parser.add_argument("--output-dir", type=Path,
                        help="where the run folder goes (default: $FEDHEART_OUTPUT_DIR, else output.root)")
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / ".fedheart" / "deploy",
                        help="certificates, Flower state and process logs (a timestamped subfolder)")
    parser.add_argument("--san", action="append", default=[], metavar="HOST",
                        help="extra name/address for the server certificate (repeatable)")
    parser.add_argument("--certs", type=Path,
                        help="use this folder's certificates and keys (launcher.certs layout) instead of new ones; "
                             "checked before any process starts")
    parser.add_argument("--policy", type=Path, metavar="FILE",
                        help="the hospitals' policy file (YAML, see docs/privacy.md): every SuperNode gets "
                             "node-config policy-path=FILE; checked before any process starts; needs --state-root")
    parser.add_argument("--state-root", type=Path, metavar="DIR",
                        help="hospital state folders DIR/<hospital> (node-config state-dir): lifetime privacy "
                             "ledger and audit trail, kept across runs")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="hospital",
                        help="hospital (default): launcher.hospital beside each SuperNode runs only the apps its "
                             "policy approves (approved-apps; needs --policy); flower: Flower's stock SuperExec, "
                             "which runs any app")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + ([f"rounds={args.rounds}"] if args.rounds is not None else [])
    try:
        from fedheart.config import ConfigError
        from fedheart.runs import output_root
        from fedheart.sources import DataNotFoundError

        if args.policy is not None:
            check_policy(args.policy)  # first: a policy mistake is named before data and certificates are looked at
        if args.policy is not None and args.state_root is None:
            raise FlowerError("--policy needs --state-root DIR: each hospital keeps its lifetime privacy ledger and "
                              "audit trail in DIR/<hospital>")
        if args.launcher == "hospital" and args.policy is None:
            raise FlowerError(NEEDS_APPROVAL)
        files, cfg = hospital_files(overrides, args.data_dir.expanduser().resolve() if args.data_dir else None)
        output_dir = args.output_dir.expanduser().resolve() if args.output_dir else output_root(cfg.output.root)
        certs = verify_material(args.certs.expanduser().resolve(), list(files)) if args.certs else None
        workdir = args.workdir / time.strftime("%Y%m%d-%H%M%S")
        deployment = Deployment(workdir, files, output_dir, args.san, certs=certs.folder if certs else None,
                                policy=args.policy, state_root=args.state_root, launcher=args.launcher)
        fab_hash = deployment.app_hash  # the bundle `flwr run .` will send: what a hospital approves
    except (ConfigError, DataNotFoundError, FlowerError, CertError, PolicyError, AppHashError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the processes too, like Ctrl-C
    try:
        print(f"Starting a TLS SuperLink and {len(files)} authenticated SuperNodes (state and logs: {workdir})")
        for name, path in files.items():
            print(f"  {name}: {path}")
        print(f"App submitted: {REPO_ROOT} (bundle sha256 {fab_hash}: the hash a hospital lists in approved-apps)")
        if deployment.launcher == "hospital":
            print("Each SuperNode runs with launcher.hospital beside it: only approved apps run (docs/security.md)")
            for name in deployment.unapproving():
                print(f"warning: {name}'s policy {deployment.policies[name]} does not list {fab_hash} in "
                      "approved-apps: its launcher will refuse the run", file=sys.stderr)
        else:
            print("Each SuperNode runs Flower's stock SuperExec (--launcher flower): any app submitted runs")
        if deployment.policies:
            print(f"Hospital policy: {', '.join(sorted(set(map(str, deployment.policies.values()))))}")
        else:
            print(NO_POLICY)
        if deployment.state_root:
            print(f"Hospital state (ledger, audit trail): {deployment.state_root}/<hospital>")
        deployment.start()
        assert deployment.link is not None
        proxy = deployment.proxy.address if deployment.proxy else "-"
        print(f"SuperLink {deployment.link.address} (loopback: operator and ServerApp), fleet proxy {proxy} "
              f"(SuperNodes) with SuperNodes {', '.join(deployment.node_ids)} online")
        run_id, record = deployment.run(overrides)
    except (FlowerError, CertError) as exc:
        print(f"error: {exc}\nlogs: {', '.join(map(str, deployment.logs()))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: SuperLink, SuperNodes and launchers stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave processes behind
        deployment.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    status = record.get("status")
    print(f"\nRun {run_id}: {status} in {float(record.get('elapsed') or 0):.0f}s")
    print(f"Results: {deployment.run_dir(run_id, cfg.output.run_name)}")
    print(f"Logs:    {workdir}")
    intact = True
    if deployment.state_dirs:
        lines, intact = deployment.safeguards(run_id)
        print(f"Hospital safeguards ({deployment.state_root}/<hospital>):")
        print("\n".join(lines))
    return run_exit_code(record, intact)


if __name__ == "__main__":
    sys.exit(main())
