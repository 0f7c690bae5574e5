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
import contextlib
import functools
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

from fedheart.safeguard.policy import Policy, PolicyError, load_policy
from launcher.certs import CertBundle, CertError, verify_material, write_bundle
from launcher.fab import AppHashError, app_hash
from launcher.flower import (
    REPO_ROOT,
    FlowerError,
    SuperLink,
    SuperNode,
    TlsFiles,
    list_supernodes,
    node_config_arg,
    register_supernode,
    submit_run,
    wait_for_nodes,
    wait_for_run,
    wait_until,
)
from launcher.proxy import FleetProxy
from launcher.safeguards import check_policy, safeguard_report
from launcher.sidecar import LauncherProcess, superexec_secret

COMPLETED = "finished:completed"
NO_POLICY = ("No hospital policy (--policy): the aggregator is trusted with every privacy decision; each "
             "hospital follows the privacy settings the server sends.")
LAUNCHERS = ("hospital", "flower")  # launcher.hospital beside each SuperNode / Flower's stock SuperExec
NEEDS_APPROVAL = ("--launcher hospital (the default) runs only the apps a hospital's policy approves: give --policy "
                  "FILE listing the app's hash under approved-apps (the hash: python -m launcher.fab .) and "
                  "--state-root DIR, or --launcher flower for Flower's stock SuperExec, which runs any app")


class Deployment:
    """A TLS SuperLink with SuperNode authentication and one authenticated SuperNode per hospital.

    ``data_files`` maps a hospital key to the one file its SuperNode may read. The ServerApp writes
    its run folders under ``output_dir`` (passed as $FEDHEART_OUTPUT_DIR). Everything else
    (certificates, Flower state, logs) lives under ``workdir``; ``certs`` names a folder of existing
    material (launcher.certs layout) to use instead of new material (checked before anything starts).

    ``policy``: the hospitals' policy file (one for all, or one per hospital), read by each
    SuperNode's ClientApp for every message (node-config ``policy-path``); checked here with
    :func:`fedheart.safeguard.policy.load_policy` (:class:`PolicyError`). ``state_root``: each
    hospital's state folder is ``state_root/<hospital>`` (node-config ``state-dir``: its lifetime
    privacy ledger and audit trail); required with a policy, useful without one (an audit trail).

    ``launcher``: ``"hospital"`` (needs ``policy``) runs each SuperNode with ``--isolation process``
    and a :class:`launcher.sidecar.LauncherProcess` beside it (``launchers[name]``), which runs only
    the apps the hospital's policy approves (``approved-apps``); ``"flower"``: Flower's own SuperExec
    in each SuperNode, which runs any app. ``app_dir`` is what :meth:`run` submits (its hash:
    :attr:`app_hash`).

    Network layout (docs/security.md): the SuperLink listens on 127.0.0.1 only, where the operator's
    ``flwr`` commands and the ServerApp reach it; the hospitals dial the fleet proxy (``proxy``,
    :class:`launcher.proxy.FleetProxy`, listening on ``public_host``), which serves only the Fleet API
    and /health. ``dial`` maps a hospital to the host it dials the proxy at (default ``public_host``, or
    127.0.0.1 for 0.0.0.0); ``place(name)`` is a context manager under which hospital ``name``'s
    processes start (e.g. its network namespace, launcher.netns; default: here).
    """

    def __init__(self, workdir: Path, data_files: Mapping[str, Path], output_dir: Path,
                 sans: Sequence[str] = (), certs: Path | None = None,
                 policy: Path | Mapping[str, Path] | None = None, state_root: Path | None = None,
                 launcher: str = "hospital", app_dir: Path = REPO_ROOT, public_host: str = "127.0.0.1",
                 dial: Mapping[str, str] | None = None,
                 place: Callable[[str], AbstractContextManager[object]] | None = None) -> None:
        if not data_files:
            raise FlowerError("a deployment needs at least one hospital data file")
        if launcher not in LAUNCHERS:
            raise FlowerError(f"launcher {launcher!r}: one of {', '.join(LAUNCHERS)}")
        if launcher == "hospital" and policy is None:
            raise FlowerError(NEEDS_APPROVAL)
        self.launcher = launcher
        self.app_dir = Path(app_dir)
        self.workdir = workdir
        self.data_files = {k: Path(v).resolve() for k, v in data_files.items()}
        self.output_dir = output_dir.resolve()
        self.sans = list(sans)
        self.policies: dict[str, Path] = {}
        self.rules: dict[str, Policy] = {}
        if policy is not None:
            files = policy if isinstance(policy, Mapping) else dict.fromkeys(self.data_files, policy)
            missing = sorted(set(self.data_files) - set(files))
            if missing:
                raise FlowerError(f"no policy file for {', '.join(missing)}")
            if state_root is None:
                raise FlowerError("a hospital policy needs a state folder for its ledger and audit trail "
                                  "(--state-root DIR)")
            for name in self.data_files:
                self.policies[name], self.rules[name] = check_policy(Path(files[name]))
        self.state_root = Path(state_root).expanduser().resolve() if state_root is not None else None
        self.state_dirs = {name: self.state_root / name for name in self.data_files} if self.state_root else {}
        for folder in [*([self.state_root] if self.state_root else []), *self.state_dirs.values()]:
            if folder.exists() and not folder.is_dir():
                raise FlowerError(f"state folder {folder} exists and is not a folder")
        for name in self.data_files:
            node_config_arg(self.node_config(name))  # a value Flower cannot pass fails now, not at start
        self.certs: CertBundle | None = verify_material(certs, list(self.data_files)) if certs else None
        self.public_host, self.dial = public_host, dict(dial or {})
        self.place = place or (lambda name: contextlib.nullcontext())
        self.link: SuperLink | None = None
        self.proxy: FleetProxy | None = None
        self.nodes: dict[str, SuperNode] = {}
        self.launchers: dict[str, LauncherProcess] = {}
        self.node_ids: dict[str, str] = {}

    @functools.cached_property
    def app_hash(self) -> str:
        """SHA-256 of the bundle :meth:`run` submits (``flwr run`` builds it from ``app_dir`` at submit
        time: an edit in between gives the run another hash, which the hospitals refuse)."""
        return app_hash(self.app_dir)

    def unapproving(self) -> list[str]:
        """Hospitals whose policy file, as it is now, does not list :attr:`app_hash` in approved-apps."""
        missing = []
        for name, path in self.policies.items():
            try:
                approved = {h.lower() for h in load_policy(path).approved_apps}
            except PolicyError:
                approved = set()
            if self.app_hash not in approved:
                missing.append(name)
        return missing

    def node_config(self, name: str) -> dict[str, str | int | float | bool]:
        """Hospital ``name``'s --node-config: its file and name, its policy file and state folder if any."""
        config: dict[str, str | int | float | bool] = {"data-path": str(self.data_files[name]), "hospital": name}
        if name in self.policies:
            config["policy-path"] = str(self.policies[name])
        if name in self.state_dirs:
            config["state-dir"] = str(self.state_dirs[name])
        return config

    def safeguards(self, run_id: str | None = None) -> tuple[list[str], bool]:
        """Each hospital's audit verification and budget lines (:func:`safeguard_report`), against the
        policy file as it is now (a SuperNode reads it for every message, so it may have changed)."""
        rules = {}
        for name, path in self.policies.items():
            with contextlib.suppress(PolicyError):  # unreadable now: the budget line goes without a limit
                rules[name] = load_policy(path)
        return safeguard_report(self.state_dirs, run_id, rules)

    def fleet_address(self, name: str) -> str:
        """host:port at which hospital ``name``'s SuperNode dials the fleet proxy."""
        if self.proxy is None:
            raise FlowerError("start() the deployment first")
        default = "127.0.0.1" if self.public_host in ("0.0.0.0", "") else self.public_host
        return f"{self.dial.get(name, default)}:{self.proxy.port}"

    def start(self, timeout: float = 180) -> Deployment:
        """Certificates, SuperLink, fleet proxy, key registration, SuperNodes (and their launchers); returns
        once every node is online and every launcher polls its SuperNode."""
        try:
            for state in self.state_dirs.values():  # the hospital's own folder: only it reads it
                state.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.certs is None:
                self.certs = write_bundle(self.workdir / "certs", self.sans, list(self.data_files))
            tls = TlsFiles(self.certs.ca_cert, self.certs.server_cert, self.certs.server_key)
            self.link = SuperLink(self.workdir / "superlink", simulation=False, tls=tls, supernode_auth=True,
                                  extra_env={"FEDHEART_OUTPUT_DIR": str(self.output_dir)})
            self.link.start(timeout)
            self.proxy = FleetProxy(self.workdir / "proxy", self.link.address, tls, host=self.public_host)
            self.proxy.start(timeout)
            for name in self.data_files:
                keys = self.certs.nodes[name]
                self.node_ids[name] = register_supernode(self.link, keys.public_key, name=name)
                workdir = self.workdir / "supernodes" / name
                secret = superexec_secret(workdir) if self.launcher == "hospital" else None
                with self.place(name):
                    self.nodes[name] = SuperNode(
                        workdir, self.fleet_address(name), self.node_config(name),
                        root_certificates=self.certs.ca_cert, private_key=keys.private_key, name=name,
                        isolation="process" if secret else "subprocess", superexec_auth_secret=secret).start()
                    if secret:
                        self.launchers[name] = LauncherProcess(self.nodes[name], self.policies[name],
                                                               self.state_dirs[name], secret).start()
            wait_for_nodes(self.link, list(self.node_ids.values()), list(self.nodes.values()), timeout)
            for launcher in self.launchers.values():
                launcher.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def run(self, overrides: Sequence[str] = (), stream: bool = True, echo: IO[str] | None = sys.stdout,
            timeout: float = 3600) -> tuple[str, dict[str, Any]]:
        """``flwr run`` the app on this federation; returns the run id and its ``flwr ls`` record."""
        if self.link is None:
            raise FlowerError("start() the deployment first")
        run_id = submit_run(self.link, overrides=overrides, app_dir=self.app_dir, stream=stream, echo=echo,
                            timeout=timeout)
        return run_id, wait_for_run(self.link, run_id, timeout=timeout)

    def wait_online(self, timeout: float = 180) -> None:
        """Return once every hospital's SuperNode is online (e.g. after a fault); fail if one of them or
        of their launchers has exited."""
        if self.link is None:
            raise FlowerError("start() the deployment first")
        wait_for_nodes(self.link, list(self.node_ids.values()), list(self.nodes.values()), timeout)
        for launcher in self.launchers.values():
            launcher.check()

    def clientapp_pids(self, name: str) -> list[int]:
        """The processes running hospital ``name``'s ClientApp tasks now: its launcher's forked children,
        or with ``launcher="flower"`` the ``flwr-clientapp`` processes under its SuperNode."""
        if name in self.launchers:
            return self.launchers[name].clientapp_pids()
        return self.nodes[name].clientapp_pids()

    def kill_node(self, name: str) -> None:
        """SIGKILL hospital ``name``'s SuperNode with its launcher and ClientApps (a crashed machine)."""
        if name in self.launchers:
            self.launchers[name].kill()
        self.nodes[name].kill()

    def kill_launcher(self, name: str) -> list[int]:
        """SIGKILL hospital ``name``'s launcher only (its SuperNode stays connected); returns the children
        it had, which die with it."""
        return self.launchers[name].kill(children=False)

    def restart_launcher(self, name: str) -> LauncherProcess:
        """Start hospital ``name``'s launcher again (killed first if it still runs), against its
        SuperNode's current port; returns once started, not yet polling (``wait_ready``)."""
        with self.place(name):
            return self.launchers[name].restart()

    def restart_node(self, name: str, timeout: float = 180) -> SuperNode:
        """Start hospital ``name``'s SuperNode again after it died (e.g. ``nodes[name].kill()``): same
        key, hence the same node id, and the same file. Returns once it is started, not yet online.

        Flower 1.42 refuses to activate a node whose previous session the SuperLink still counts as
        online (the new SuperNode exits with code 305, "Failed to activate SuperNode"); a dead node is
        counted offline only once it has missed its heartbeats (HEARTBEAT_PATIENCE 2 x the 30 s
        interval after its last one). So this first waits until ``flwr supernode list`` no longer
        shows the node online (up to ~60 s after the crash).
        """
        if self.link is None:
            raise FlowerError("start() the deployment first")
        link, node_id = self.link, self.node_ids[name]

        def old_session_over() -> bool:
            return all(str(n["node-id"]) != node_id or n.get("status") != "online" for n in list_supernodes(link))

        wait_until(old_session_over, timeout, f"the SuperLink counts {name}'s dead SuperNode offline",
                   max_delay=4.0)  # each check is a `flwr supernode list` (~2 s CPU)
        with self.place(name):
            node = self.nodes[name].restart()
            if name in self.launchers:  # the SuperNode listens on a new port: its launcher follows it
                self.launchers[name].restart()
        return node

    def restart_superlink(self, timeout: float = 180) -> float:
        """Start the SuperLink again after it died (e.g. ``link.kill()``), on its port, state database and
        certificates (:meth:`SuperLink.restart`), touching no SuperNode, launcher or proxy: the SuperNodes
        reconnect by themselves (Flower's retries, ``--max-wait-time``). Returns the seconds from the
        restart until every SuperNode is online again (docs/reliability.md)."""
        if self.link is None:
            raise FlowerError("start() the deployment first")
        started = time.monotonic()
        self.link.restart(timeout)
        self.wait_online(timeout)
        return time.monotonic() - started

    def ensure_running(self, timeout: float = 180) -> None:
        """Restart every SuperNode (:meth:`restart_node`) or launcher that is not running; then
        :meth:`wait_online`."""
        for name, node in self.nodes.items():
            if node.process is None or node.process.popen.poll() is not None:
                self.restart_node(name, timeout)
            elif name in self.launchers and not self.launchers[name].running:
                self.restart_launcher(name)
        self.wait_online(timeout)

    def run_dir(self, run_id: str, run_name: str | None = None) -> Path:
        """The run's output folder: ``output_dir/<run_name>``, by default the one named ``*-run<id>``."""
        if run_name:
            return self.output_dir / run_name
        found = sorted(self.output_dir.glob(f"*-run{run_id}"))
        return found[-1] if found else self.output_dir / f"<no folder for run {run_id}>"

    def stop(self) -> None:
        """Stop the launchers (each lets its running tasks finish, then ends them), the SuperNodes (each
        group side by side: a launcher takes seconds to end), the proxy, then the SuperLink (each ends its
        own SuperExec and app processes)."""
        with ThreadPoolExecutor(max(len(self.nodes), 1)) as pool:
            list(pool.map(LauncherProcess.stop, self.launchers.values()))
            list(pool.map(SuperNode.stop, self.nodes.values()))
        if self.proxy:
            self.proxy.stop()
        if self.link:
            self.link.stop()

    def logs(self) -> list[Path]:
        paths = [n.process.log_path for n in self.nodes.values() if n.process]
        paths += [launcher.log_path for launcher in self.launchers.values() if launcher.process]
        if self.proxy and self.proxy.process:
            paths.insert(0, self.proxy.log_path)
        if self.link and self.link.process:
            paths.insert(0, self.link.process.log_path)
        return paths

    def __enter__(self) -> Deployment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
    if status != COMPLETED:
        print(f"error: the run did not complete: {record.get('status-details')}", file=sys.stderr)
        return 1
    if not intact:
        print("error: a hospital's audit trail does not verify (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
