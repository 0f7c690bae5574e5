"""The local deployment: a TLS SuperLink behind the fleet proxy and one authenticated SuperNode per
hospital (:class:`Deployment`). Its command line, ``python -m launcher.deploy``, is
:mod:`launcher.deploy_cli` (what it starts, and why, is described there)."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

from fedheart.safeguard.policy import Policy
from launcher.certs import CertBundle, verify_material, write_bundle
from launcher.deploy_faults import DeploymentFaults
from launcher.fab import app_hash
from launcher.flower import (
    REPO_ROOT,
    FlowerError,
    SuperLink,
    SuperNode,
    TlsFiles,
    node_config_arg,
    register_supernode,
    submit_run,
    wait_for_nodes,
    wait_for_run,
)
from launcher.proxy import FleetProxy
from launcher.safeguards import check_policies, current_policies, safeguard_report
from launcher.sidecar import LauncherProcess, superexec_secret

COMPLETED = "finished:completed"
NO_POLICY = ("No hospital policy (--policy): the aggregator is trusted with every privacy decision; each "
             "hospital follows the privacy settings the server sends.")
LAUNCHERS = ("hospital", "flower")  # launcher.hospital beside each SuperNode / Flower's stock SuperExec
NEEDS_APPROVAL = ("--launcher hospital (the default) runs only the apps a hospital's policy approves: give --policy "
                  "FILE listing the app's hash under approved-apps (the hash: python -m launcher.fab .) and "
                  "--state-root DIR, or --launcher flower for Flower's stock SuperExec, which runs any app")


class Deployment(DeploymentFaults):
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
            if state_root is None:
                raise FlowerError("a hospital policy needs a state folder for its ledger and audit trail "
                                  "(--state-root DIR)")
            self.policies, self.rules = check_policies(policy, list(self.data_files))
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
        return [name for name, rules in current_policies(self.policies).items()
                if rules is None or self.app_hash not in {h.lower() for h in rules.approved_apps}]

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
        rules = {name: r for name, r in current_policies(self.policies).items() if r is not None}
        return safeguard_report(self.state_dirs, run_id, rules)  # unreadable now: a budget line without a limit

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


if __name__ == "__main__":  # `python -m launcher.deploy`: the command line of launcher/deploy_cli.py
    from launcher.deploy_cli import main

    sys.exit(main())
