"""Flower's command-line tools: where they are, the environment they run in, their processes, and
waiting on them (:mod:`launcher.superlink` and :mod:`launcher.supernode` start them)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

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


class FlowerProcess:
    """Holds one started Flower process (``process``) and its folder (``workdir``, its $FLWR_HOME inside):
    ``stop()`` it, or use it as ``with X(...) as x:``, which starts and stops it."""

    workdir: Path
    process: Process | None

    @property
    def flwr_home(self) -> Path:
        return self.workdir / "flwr-home"

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_process(name: str, argv: Sequence[str], env: dict[str, str], log_path: Path,
                  cwd: Path = REPO_ROOT) -> Process:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out: IO[bytes] = log_path.open("ab")
    popen = subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    out.close()
    return Process(name, popen, log_path)
