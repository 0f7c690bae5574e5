"""Drive Flower's CLI: SuperLink and SuperNode processes, connections in $FLWR_HOME, node
registration, runs and their status."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from launcher.processes import descendants, processes_named, signal_all

REPO_ROOT = Path(__file__).resolve().parent.parent
FLOWER_ENV = {
    # The SuperLink must not `uv sync` the app (it would download a CUDA torch): use this env.
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "RAY_DISABLE_USAGE_STATS": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}
FINISHED = "finished:"
# A SuperNode that loses the SuperLink (its pod restarting, docs/reliability.md) retries each Fleet call
# with Flower's exponential backoff (1, 2, 4 ... s, capped at 20 s, full jitter) for at most this long,
# then exits (a supervisor restarts it). Flower's default is to retry for ever.
SUPERNODE_MAX_WAIT_S = 600.0
SUPERNODE_MAX_RETRIES = 300  # not the binding limit: ~10 s a try at the cap outlasts SUPERNODE_MAX_WAIT_S


class FlowerError(RuntimeError):
    """A Flower process or command failed; the message says which and why."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tool(name: str) -> str:
    """Path of a Flower executable next to this Python (the venv), else on PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise FlowerError(f"'{name}' not found: install the project first (make install)")
    return found


def flower_env(flwr_home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(flwr_home), **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    # SuperLink and SuperNode spawn `flower-superexec` by name: it must be found in this venv.
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p)
    return env


def wait_until(check: Any, timeout: float, what: str, proc: subprocess.Popen | None = None,
               log_path: Path | None = None, max_delay: float = 0.5) -> None:
    """Poll ``check()`` until it is true; fail early if ``proc`` exits, or after ``timeout``.

    The pause between checks doubles from 0.05 s up to ``max_delay`` (raise it for checks that
    cost CPU themselves, such as a ``flwr`` command: about 2 s of CPU each).
    """
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path and log_path.exists() else ""
            raise FlowerError(f"{what}: the process exited with code {proc.returncode}\n{tail}")
        time.sleep(delay)  # back-off between readiness probes, not a synchronisation sleep
        delay = min(delay * 2, max_delay)
    raise FlowerError(f"{what}: not ready after {timeout:.0f}s")


def health_ok(url: str, context: Any = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class TlsFiles:
    """CA certificate, server certificate and key for a TLS SuperLink."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass
class Process:
    """A Flower process we started and must stop."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the process (SIGKILL after ``timeout``), then SIGKILL what is left in its process
        group: Flower processes it spawned that outlived it (e.g. a ClientApp of a failed run that Flower
        1.42 never stops, see docs/reliability.md)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            self.popen.send_signal(signal.SIGCONT)  # a stopped process acts on SIGTERM only once continued
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        self._kill_group()

    def kill_group(self, timeout: float = 15) -> None:
        """SIGKILL the process and everything left in its process group, as a crash or power loss
        would; then reap it."""
        self._kill_group()
        self.popen.wait(timeout)

    def _kill_group(self) -> None:
        """SIGKILL the process group: started in a session of its own, the process leads it, so it holds
        the Flower processes it spawned, even those that outlived it."""
        with contextlib.suppress(ProcessLookupError):  # nothing left in the group
            os.killpg(self.popen.pid, signal.SIGKILL)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def start_process(name: str, argv: Sequence[str], env: dict[str, str], log_path: Path,
                  cwd: Path = REPO_ROOT) -> Process:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out: IO[bytes] = log_path.open("ab")
    popen = subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    out.close()
    return Process(name, popen, log_path)


@dataclass
class SuperLink:
    """A ``flower-superlink`` on loopback with its own ports, state and $FLWR_HOME connection."""

    workdir: Path
    simulation: bool = True
    tls: TlsFiles | None = None
    supernode_auth: bool = False
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    connection: str = "fedheart"
    extra_env: dict[str, str] = field(default_factory=dict)
    process: Process | None = None

    @property
    def flwr_home(self) -> Path:
        return self.workdir / "flwr-home"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return flower_env(self.flwr_home, self.extra_env)

    def start(self, timeout: float = 60) -> SuperLink:
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        # One port serves the Fleet, Control and Runtime APIs (1.42: the old per-API addresses are gone).
        argv = [tool("flower-superlink"), "--host", self.host, "--port", str(self.port),
                "--database", str(self.workdir / "superlink-state.db"),
                "--disable-runtime-dependency-installation"]
        argv += ["--simulation"] if self.simulation else []
        if self.tls:
            argv += ["--ssl-ca-certfile", str(self.tls.ca_cert), "--ssl-certfile", str(self.tls.server_cert),
                     "--ssl-keyfile", str(self.tls.server_key)]
        else:
            argv += ["--insecure"]
        if self.supernode_auth:
            argv += ["--enable-supernode-auth"]
        self.process = start_process("superlink", argv, self.env, self.workdir / "superlink.log")
        ctx = None
        if self.tls:
            import ssl

            ctx = ssl.create_default_context(cafile=str(self.tls.ca_cert))
        scheme = "https" if self.tls else "http"
        wait_until(lambda: health_ok(f"{scheme}://{self.address}/health", ctx), timeout,
                   f"SuperLink on {self.address}", self.process.popen, self.process.log_path)
        self.write_connection()
        return self

    def serverapp_pids(self) -> list[int]:
        """The ``flwr-serverapp`` processes (one per running run) that this SuperLink's SuperExec started."""
        return processes_named(self.process.popen.pid, "flwr-serverapp") if self.process else []

    def kill(self) -> None:
        """SIGKILL the SuperLink with every process it started, its SuperExec and ServerApps included (the
        aggregator's machine or pod failing; Flower starts those in sessions of their own, so a kill of the
        SuperLink's process group alone would leave them running); the state database stays as it was."""
        if self.process:
            spawned = descendants(self.process.popen.pid)
            self.process.kill_group()
            signal_all(spawned)

    def restart(self, timeout: float = 60) -> SuperLink:
        """Start the SuperLink again after :meth:`kill` or :meth:`stop`: same host and port (SuperNodes, or
        a proxy in front, dial the same address), state database, certificates and connection; its log
        goes on in the same file. Returns once ``/health`` answers (docs/reliability.md)."""
        if self.process:
            if self.process.popen.poll() is None:
                raise FlowerError(f"SuperLink {self.address} is still running: kill() or stop() it first")
            self.process.kill_group()  # what its previous run left in its process group
        return self.start(timeout)

    def write_connection(self) -> None:
        """Point the ``fedheart`` connection of this $FLWR_HOME at this SuperLink."""
        lines = ["[superlink]", f'default = "{self.connection}"', "",
                 f"[superlink.{self.connection}]", f'address = "{self.address}"']
        if self.tls:
            lines.append(f'root-certificates = "{self.tls.ca_cert}"')
        else:
            lines.append("insecure = true")
        (self.flwr_home / "config.toml").write_text("\n".join(lines) + "\n")

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def __enter__(self) -> SuperLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def submit_run(link: SuperLink, *, overrides: Sequence[str] = (), federation: dict[str, Any] | None = None,
               app_dir: Path = REPO_ROOT, stream: bool = True, echo: IO[str] | None = sys.stdout,
               timeout: float = 3600, run_config: dict[str, str | int | float | bool] | None = None) -> str:
    """``flwr run`` the app; returns the run id. With ``stream`` the logs are echoed until the end.

    ``run_config``: the app's run-config keys instead of fedheart's ``overrides`` (e.g. bench/floor_app).
    """
    values = run_config if run_config is not None else {"overrides": " ".join(overrides)}
    run_config_file = link.workdir / f"run-config-{time.time_ns()}.toml"
    run_config_file.write_text("".join(f"{k} = {toml_string(v) if isinstance(v, str) else json.dumps(v)}\n"
                                       for k, v in values.items()))
    argv = [tool("flwr"), "run", str(app_dir), link.connection, "--run-config", str(run_config_file)]
    for key, value in (federation or {}).items():
        argv += ["--federation-config", f"{key}={json.dumps(value) if isinstance(value, str) else value}"]
    argv += ["--stream"] if stream else ["--format", "json"]
    proc = subprocess.Popen(argv, env=link.env, cwd=app_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, stdin=subprocess.DEVNULL)
    run_id = None
    output: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        output.append(line)
        if echo is not None:
            echo.write(line)
            echo.flush()
        if run_id is None and (m := re.search(r"(?:started run\s+|\"run-id\":\s*\"?)(\d+)", line)):
            run_id = m.group(1)
        if time.monotonic() > deadline:
            proc.kill()
            break
    proc.wait()
    if run_id is None:
        raise FlowerError("flwr run did not start a run:\n" + "".join(output)[-3000:])
    return run_id


def flwr_json(link: SuperLink, *args: str, timeout: float = 60) -> dict[str, Any]:
    """``flwr ARGS... CONNECTION --format json`` against this SuperLink; its JSON answer."""
    argv = [tool("flwr"), *args, link.connection, "--format", "json"]
    out = subprocess.run(argv, env=link.env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    what = "flwr " + " ".join(args[:2])
    try:
        data = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise FlowerError(f"{what} failed (exit {out.returncode}): {out.stdout[-2000:]} {out.stderr[-2000:]}") from None
    if not isinstance(data, dict) or data.get("success") is False:
        raise FlowerError(f"{what} failed (exit {out.returncode}): {data}")
    return data


def run_status(link: SuperLink, run_id: str) -> dict[str, Any]:
    """The run's record from ``flwr ls`` (``status`` is e.g. ``finished:completed``)."""
    data = flwr_json(link, "ls", "--run-id", run_id)
    runs = data.get("runs") or []
    if not runs:
        raise FlowerError(f"flwr ls knows no run {run_id}: {data}")
    return runs[0]


def wait_for_run(link: SuperLink, run_id: str, timeout: float = 3600) -> dict[str, Any]:
    """Poll ``flwr ls`` until the run has finished; returns its record."""
    record: dict[str, Any] = {}

    def done() -> bool:
        nonlocal record
        record = run_status(link, run_id)
        return str(record.get("status", "")).startswith(FINISHED)

    wait_until(done, timeout, f"run {run_id}", max_delay=3.0)  # each check is a `flwr ls` (~2 s CPU)
    return record


def stop_run(link: SuperLink, run_id: str) -> None:
    """``flwr stop RUN_ID``: ask the SuperLink to stop a run that has not finished (for clean-ups)."""
    if not str(run_status(link, run_id).get("status", "")).startswith(FINISHED):
        flwr_json(link, "stop", run_id)


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
class SuperNode:
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
    def flwr_home(self) -> Path:
        return self.workdir / "flwr-home"

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

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def __enter__(self) -> SuperNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def register_supernode(link: SuperLink, public_key: Path, name: str | None = None) -> str:
    """``flwr supernode register``: allow the node holding this key's private half; returns its node id."""
    data = flwr_json(link, "supernode", "register", str(public_key), *(["--name", name] if name else []))
    return str(data["node-id"])


def list_supernodes(link: SuperLink) -> list[dict[str, Any]]:
    """``flwr supernode list``: registered nodes with ``node-id`` and ``status`` (registered/online/...)."""
    return list(flwr_json(link, "supernode", "list").get("nodes") or [])


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
