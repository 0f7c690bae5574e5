"""A hospital's launcher (``python -m launcher.hospital``) beside one SuperNode of a local deployment:
started, stopped and killed like the SuperNode, and what it tells of the ClientApp processes it forks."""

from __future__ import annotations

import re
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from launcher import processes
from launcher.flower import FlowerError, Process, SuperNode, flower_env, start_process, wait_until
from launcher.hospital import READY

# launcher.hospital.RUNNING as logged: "task T of run R: child PID runs its TYPE message (node N)"
RUNNING_LINE = re.compile(r"task (\d+) of run (\d+): child (\d+) runs its (\S+) message \(node (\d+)\)")


def superexec_secret(folder: Path) -> Path:
    """Write a fresh random secret (mode 0600) for one SuperNode and its launcher (both get
    ``--superexec-auth-secret-file``): only its holder can take the SuperNode's tasks from the loopback
    Runtime API, so no other local process runs an app there, approved or not."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "superexec-auth.secret"
    path.touch(mode=0o600)
    path.write_text(secrets.token_hex(32))
    return path


@dataclass(frozen=True)
class ChildTask:
    """One message as a launcher's child ran it (from the launcher's log)."""

    pid: int
    task: int
    run: str
    message: str
    node: int


@dataclass
class LauncherProcess:
    """``python -m launcher.hospital`` for ``node`` (a SuperNode with ``isolation="process"``): its
    Runtime API on loopback (plain HTTP, signed with ``secret`` if given), the hospital's policy file
    (``approved-apps``) and state folder (the same as the SuperNode's node config), its log
    ``<node workdir>/launcher.log`` (appended to across restarts).

    Every start installs approved bundles into a fresh folder ``<node workdir>/launcher-flwr-home-<n>``:
    a child killed while installing can leave a half-copied bundle, which Flower would reuse by name.
    """

    node: SuperNode
    policy: Path
    state_dir: Path
    secret: Path | None = None
    patience: float = 60.0  # rides out a SuperNode restart; a dead SuperNode's launcher is replaced anyway
    grace: float = 10.0
    process: Process | None = None
    starts: int = 0
    _log_offset: int = 0

    @property
    def name(self) -> str:
        return f"{self.node.name}-launcher"

    @property
    def log_path(self) -> Path:
        return self.node.workdir / "launcher.log"

    @property
    def flwr_home(self) -> Path:
        return self.node.workdir / f"launcher-flwr-home-{self.starts}"

    @property
    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "launcher.hospital", "--runtime-api-address", f"127.0.0.1:{self.node.port}",
                "--policy", str(self.policy), "--state-dir", str(self.state_dir), "--insecure",
                "--patience", f"{self.patience:g}", "--grace", f"{self.grace:g}", "--flwr-home", str(self.flwr_home)]
        if self.secret is not None:
            argv += ["--superexec-auth-secret-file", str(self.secret)]
        return argv

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.popen.poll() is None

    def start(self) -> LauncherProcess:
        """Start the launcher against the SuperNode's current port (see :meth:`wait_ready`)."""
        self.starts += 1
        shutil.rmtree(self.flwr_home, ignore_errors=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.process = start_process(self.name, self.argv, flower_env(self.node.flwr_home, self.node.extra_env),
                                     self.log_path)
        return self

    def wait_ready(self, timeout: float = 180) -> None:
        """Return once the warm parent has preloaded and polls the Runtime API; fail if it exits."""
        assert self.process is not None, "start() first"

        def ready() -> bool:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                return READY.encode() in f.read()

        wait_until(ready, timeout, f"{self.name} polls the Runtime API", self.process.popen, self.log_path)

    def check(self) -> None:
        """Fail (with its log) if the launcher has exited."""
        if self.process is not None and not self.running:
            raise FlowerError(f"{self.name} exited with code {self.process.popen.returncode}\n"
                              f"{self.process.log_tail()}")

    def clientapp_pids(self) -> list[int]:
        """The forked children running ClientApp tasks now (one per message being handled)."""
        return processes.children(self.process.popen.pid) if self.running else []  # type: ignore[union-attr]

    def tasks(self) -> list[ChildTask]:
        """Every message a child of this launcher has pulled, in order (all starts)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [ChildTask(int(m[3]), int(m[1]), m[2], m[4], int(m[5])) for m in RUNNING_LINE.finditer(text)]

    def stop(self) -> None:
        """SIGTERM: running tasks get ``grace`` seconds, then the launcher kills them and exits. Children
        left (none normally) are SIGKILLed."""
        if self.process is None:
            return
        children = self.clientapp_pids()
        self.process.stop(timeout=self.grace + 15)
        processes.signal_all(children)

    def kill(self, children: bool = True) -> list[int]:
        """SIGKILL the launcher, as a crash would; returns the children it had. Those die with it (the
        kernel kills them, PR_SET_PDEATHSIG); with ``children`` they are also SIGKILLed here."""
        if self.process is None:
            return []
        pids = self.clientapp_pids()
        self.process.kill_group()
        if children:
            processes.signal_all(pids)
        return pids

    def restart(self) -> LauncherProcess:
        """Kill the launcher if it still runs, then start it again (e.g. after its SuperNode restarted on a
        new port)."""
        if self.running:
            self.kill()
        return self.start()
