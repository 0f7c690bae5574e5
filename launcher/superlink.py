"""A ``flower-superlink`` process and the ``flwr`` commands against it: connections in $FLWR_HOME,
runs and their real status, node registration."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from launcher.flower_tools import (
    FINISHED,
    REPO_ROOT,
    FlowerError,
    FlowerProcess,
    Process,
    TlsFiles,
    flower_env,
    free_port,
    health_ok,
    start_process,
    tool,
    wait_until,
)
from launcher.processes import descendants, processes_named, signal_all


@dataclass
class SuperLink(FlowerProcess):
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
    # The folder its processes start in. Ray puts the simulation's folder on its workers' sys.path ahead
    # of the app bundle's: an app from another copy of the code (bench/perf.py --before) must start there.
    cwd: Path = REPO_ROOT

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
        self.process = start_process("superlink", argv, self.env, self.workdir / "superlink.log", cwd=self.cwd)
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


def register_supernode(link: SuperLink, public_key: Path, name: str | None = None) -> str:
    """``flwr supernode register``: allow the node holding this key's private half; returns its node id."""
    data = flwr_json(link, "supernode", "register", str(public_key), *(["--name", name] if name else []))
    return str(data["node-id"])


def list_supernodes(link: SuperLink) -> list[dict[str, Any]]:
    """``flwr supernode list``: registered nodes with ``node-id`` and ``status`` (registered/online/...)."""
    return list(flwr_json(link, "supernode", "list").get("nodes") or [])
