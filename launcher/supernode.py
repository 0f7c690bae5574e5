"""A ``flower-supernode`` process dialling a SuperLink, and waiting until nodes are online."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from launcher.flower_tools import (
    FlowerError,
    FlowerProcess,
    Process,
    flower_env,
    free_port,
    start_process,
    tool,
    wait_until,
)
from launcher.processes import processes_named
from launcher.superlink import SuperLink, list_supernodes

# A SuperNode that loses the SuperLink (its pod restarting, docs/reliability.md) retries each Fleet call
# with Flower's exponential backoff (1, 2, 4 ... s, capped at 20 s, full jitter) for at most this long,
# then exits (a supervisor restarts it). Flower's default is to retry for ever.
SUPERNODE_MAX_WAIT_S = 600.0
SUPERNODE_MAX_RETRIES = 300  # not the binding limit: ~10 s a try at the cap outlasts SUPERNODE_MAX_WAIT_S


def node_config_arg(values: dict[str, str | int | float | bool]) -> str:
    """``--node-config`` text: ``key='string' key2=3``. Flower splits on spaces outside quotes."""
    parts = []
    for key, value in values.items():
        if isinstance(value, str):
            if "'" in value or "\n" in value:
                raise FlowerError(f"node config {key}={value!r}: Flower cannot pass a ' or a newline in a value")
            parts.append(f"{key}='{value}'")
        else:
            parts.append(f"{key}={json.dumps(value)}")
    return " ".join(parts)


@dataclass
class SuperNode(FlowerProcess):
    """A ``flower-supernode`` dialling a SuperLink, with its own runtime port, $FLWR_HOME and log.

    ``root_certificates`` None means plaintext (``--insecure``). The SuperNode never installs app
    dependencies at run time (that needs ``--allow-runtime-dependency-installation``, never passed).
    ``isolation="process"``: it starts no SuperExec; a launcher beside it takes its tasks from its Runtime
    API (``--host 127.0.0.1 --port PORT``), signing them with ``superexec_auth_secret`` if given.
    ``max_retries`` / ``max_wait_time`` bound how long it retries a lost SuperLink (``--max-retries``,
    ``--max-wait-time``; None: Flower's default, for ever).
    """

    workdir: Path
    superlink: str
    node_config: dict[str, str | int | float | bool] = field(default_factory=dict)
    root_certificates: Path | None = None
    private_key: Path | None = None
    isolation: str = "subprocess"
    name: str = "supernode"
    max_retries: int | None = SUPERNODE_MAX_RETRIES
    max_wait_time: float | None = SUPERNODE_MAX_WAIT_S
    superexec_auth_secret: Path | None = None
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: Process | None = None

    @property
    def argv(self) -> list[str]:
        argv = [tool("flower-supernode"), "--superlink", self.superlink, "--isolation", self.isolation,
                "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--root-certificates", str(self.root_certificates)] if self.root_certificates else ["--insecure"]
        if self.private_key:
            argv += ["--auth-supernode-private-key", str(self.private_key)]
        if self.node_config:
            argv += ["--node-config", node_config_arg(self.node_config)]
        if self.max_retries is not None:
            argv += ["--max-retries", str(self.max_retries)]
        if self.max_wait_time is not None:
            argv += ["--max-wait-time", f"{self.max_wait_time:g}"]
        if self.superexec_auth_secret:
            argv += ["--superexec-auth-secret-file", str(self.superexec_auth_secret)]
        return argv

    def start(self) -> SuperNode:
        """Start the process (it connects in the background: see :func:`wait_for_nodes`)."""
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        self.process = start_process(self.name, self.argv, flower_env(self.flwr_home, self.extra_env),
                                     self.workdir / f"{self.name}.log")
        return self

    def kill(self) -> None:
        """SIGKILL the SuperNode with its SuperExec and ClientApp processes (a crashed hospital machine;
        with ``isolation="process"`` only the SuperNode: see ``Deployment.kill_node``)."""
        if self.process:
            self.process.kill_group()

    def restart(self) -> SuperNode:
        """Start the SuperNode again after :meth:`kill` or :meth:`stop`: same key (so the same node id),
        node config and $FLWR_HOME, a fresh runtime port; its log goes on in the same file. Processes
        its previous run left in its process group are killed first.

        Flower 1.42 refuses a node whose previous session the SuperLink still counts as online
        (exit 305, "Failed to activate SuperNode"): see ``Deployment.restart_node``.
        """
        if self.process:
            if self.process.popen.poll() is None:
                raise FlowerError(f"SuperNode {self.name} is still running: kill() or stop() it first")
            self.process.kill_group()
        self.port = free_port()
        return self.start()

    def clientapp_pids(self) -> list[int]:
        """The ``flwr-clientapp`` processes this SuperNode runs now (one per message being handled; none
        with ``isolation="process"``: see ``Deployment.clientapp_pids``)."""
        return processes_named(self.process.popen.pid, "flwr-clientapp") if self.process else []

    def wait_exit(self, timeout: float) -> int:
        """Exit code of a SuperNode expected to stop by itself (e.g. refused); fails after ``timeout``."""
        assert self.process is not None, "start() first"
        try:
            return self.process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise FlowerError(f"SuperNode {self.name} still running after {timeout:.0f}s\n"
                              f"{self.process.log_tail()}") from None


def wait_for_nodes(link: SuperLink, node_ids: Sequence[str], nodes: Sequence[SuperNode] = (),
                   timeout: float = 120) -> None:
    """Poll until every node id is online; fail early (with its log) if one of ``nodes`` exits."""
    wanted = set(node_ids)

    def online() -> bool:
        for node in nodes:
            if node.process and node.process.popen.poll() is not None:
                raise FlowerError(f"SuperNode {node.name} exited with code {node.process.popen.returncode}\n"
                                  f"{node.process.log_tail()}")
        up = {str(n["node-id"]) for n in list_supernodes(link) if n.get("status") == "online"}
        return wanted <= up

    wait_until(online, timeout, f"SuperNodes {sorted(wanted)} online", max_delay=2.0)  # `flwr supernode list`
