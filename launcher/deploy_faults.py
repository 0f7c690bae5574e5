"""What the fault tests (tests/e2e/test_faults.py, test_superlink_restart.py) and the reliability runbook
(docs/reliability.md) do to a running :class:`launcher.deploy.Deployment`: kill and restart its parts."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from launcher.flower import FlowerError, SuperLink, SuperNode, list_supernodes, wait_for_nodes, wait_until

if TYPE_CHECKING:
    from launcher.sidecar import LauncherProcess


class DeploymentFaults:
    """The fault-injection half of :class:`launcher.deploy.Deployment` (which sets these attributes)."""

    link: SuperLink | None
    nodes: dict[str, SuperNode]
    launchers: dict[str, LauncherProcess]
    node_ids: dict[str, str]
    place: Callable[[str], AbstractContextManager[object]]

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
