"""The launcher's loop: poll one SuperNode's Runtime API for ClientApp tasks, refuse the unapproved
ones (reply, finish, audit), fork a warm child for each approved one, reap and stop the children."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.hospital.approval import Approval, Safeguards, decide, hospital_safeguards, unreadable_policy
from launcher.hospital.errors import EXIT_API_GONE, EXIT_STOPPED, LauncherError, Stop
from launcher.hospital.runtime import RuntimeApi, refuse_task
from launcher.hospital.warm import fork_child

log = logging.getLogger("fedheart.launcher.hospital")
READY = "polling the Runtime API"  # the first line of the loop: the warm parent is ready for tasks


@dataclass
class Child:
    task_id: int
    run_id: int
    fab_hash: str
    started: float = field(default_factory=time.monotonic)


@dataclass
class HospitalLauncher:
    """Polls one SuperNode's Runtime API; approves, refuses and forks (see launcher.hospital)."""

    runtime_api_address: str
    policy_path: Path
    state_dir: Path
    insecure: bool = False
    root_certificates: bytes | None = None
    superexec_auth_secret: bytes | None = None
    poll_interval: float = 0.1
    patience: float = 30.0
    grace: float = 10.0
    safeguards: Safeguards | None = None
    children: dict[int, Child] = field(default_factory=dict)
    _stopping: bool = False
    _critical: bool = False

    @property
    def runtime_api(self) -> RuntimeApi:
        return RuntimeApi(self.runtime_api_address, self.insecure, self.root_certificates, self.superexec_auth_secret)

    def _client(self, component: str, token: str | None = None) -> Any:
        return self.runtime_api.client(component, token)

    # the policy ---------------------------------------------------------------------------------
    def approval(self, fab_hash: str) -> Approval:
        """The decision for one task, from the policy file as it is now (unreadable: refused)."""
        assert self.safeguards is not None
        try:
            policy = self.safeguards.load_policy(self.policy_path)
        except self.safeguards.policy_error as exc:
            log.error("policy %s unreadable, refusing the task: %s", self.policy_path, exc)
            return unreadable_policy(fab_hash)
        return decide(fab_hash, policy.approved_apps)

    # the loop -----------------------------------------------------------------------------------
    def run(self) -> int:
        """Poll until stopped (0) or until the Runtime API is gone for ``patience`` seconds (1)."""
        import httpx
        from flwr.proto.runtime_pb2 import AcquireTaskRequest
        from flwr.supercore.constant import TaskType

        if self.safeguards is None:
            self.safeguards = hospital_safeguards()
        client = self._client("SuperExec")
        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
        failing_since: float | None = None
        backoff = self.poll_interval
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        code = EXIT_STOPPED
        log.info("%s at %s every %.2fs (policy %s, state %s)", READY, self.runtime_api_address,
                 self.poll_interval, self.policy_path, self.state_dir)
        try:
            while not self._stopping:
                self.reap()
                try:
                    res = client.AcquireTask(request)
                except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                    status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None
                    if status is not None and 400 <= status < 500:
                        raise LauncherError(f"the Runtime API at {self.runtime_api_address} refused AcquireTask "
                                            f"(HTTP {status}): wrong --superexec-auth-secret-file or not a "
                                            "SuperNode?") from None
                    now = time.monotonic()
                    failing_since = failing_since or now
                    if now - failing_since >= self.patience:
                        log.error("the Runtime API at %s has not answered for %.0fs (%s): its SuperNode is gone; "
                                  "stopping", self.runtime_api_address, now - failing_since, exc)
                        code = EXIT_API_GONE
                        break
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                if failing_since is not None:
                    log.info("the Runtime API at %s answers again", self.runtime_api_address)
                failing_since, backoff = None, self.poll_interval
                if res.HasField("task") and res.token:
                    self.dispatch(res.task, res.token)
                    continue  # the SuperNode may already hold the next message
                time.sleep(self.poll_interval)
        except Stop:
            pass
        finally:
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the clean-up
            self.stop_children()
            client.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("stopped (%s)", "Runtime API gone" if code == EXIT_API_GONE else "signal")
        return code

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._stopping = True
        if not self._critical:
            raise Stop

    def dispatch(self, task: Any, token: str) -> None:
        """Refuse or fork one acquired task; a SIGTERM meanwhile waits until the task is handed on."""
        self._critical = True
        try:
            self._dispatch(task, token)
        finally:
            self._critical = False
        if self._stopping:
            raise Stop

    def _dispatch(self, task: Any, token: str) -> None:
        approval = self.approval(task.fab_hash)
        if not approval.approved:
            log.warning("task %d of run %d: %s", task.task_id, task.run_id, approval.reason)
            self.reply_error(task, token, approval.fab_hash, approval.reason, "refused")
            return
        log.info("task %d of run %d: app %s approved, forking", task.task_id, task.run_id, approval.fab_hash)
        try:
            pid = self.fork(token, task, approval.fab_hash)
        except OSError as exc:
            log.error("task %d of run %d: cannot fork: %s", task.task_id, task.run_id, exc)
            self.reply_error(task, token, approval.fab_hash, "the hospital's launcher could not start the task",
                             "failed")
            return
        self.children[pid] = Child(task.task_id, task.run_id, approval.fab_hash)

    # refusing ---------------------------------------------------------------------------------
    def reply_error(self, task: Any, token: str, fab_hash: str, reason: str, decision: str) -> None:
        """Answer the task with an error reply naming ``reason``, finish it as failed, audit it
        (:func:`launcher.hospital.runtime.refuse_task`: nothing of the bundle is installed or run)."""
        assert self.safeguards is not None
        message, context, sent = refuse_task(self._client("flwr-clientapp", token), task, reason)
        entry = {"run": str(task.run_id), "message": message.metadata.message_type if message else "?",
                 "app": {"fab": fab_hash}, "decision": decision, "reason": reason, "by": "launcher",
                 "task": int(task.task_id), "reply": sent,
                 "reply_sha256": hashlib.sha256(reason.encode()).hexdigest()}
        if context is not None:
            entry["node"] = int(context.node_id)
        try:
            with self.safeguards.locked(self.state_dir):
                self.safeguards.append(self.state_dir, entry)
        except OSError as exc:
            log.error("audit trail in %s not written: %s", self.state_dir, exc)

    # running ----------------------------------------------------------------------------------
    def fork(self, token: str, task: Any = None, fab_hash: str = "") -> int:
        """Fork one child for a task of the approved app ``fab_hash``
        (:func:`launcher.hospital.warm.fork_child`); its pid."""
        return fork_child(self.runtime_api_address, token, self.insecure, self.root_certificates,
                          int(getattr(task, "task_id", 0)), int(getattr(task, "run_id", 0)), fab_hash)

    def reap(self) -> None:
        """Collect every child that has ended (no zombie is left)."""
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                child = self.children.pop(pid)
                log.info("task %d of run %d: child %d ended (exit %d) after %.1fs", child.task_id, child.run_id,
                         pid, os.waitstatus_to_exitcode(status), time.monotonic() - child.started)

    def stop_children(self) -> None:
        """Give running tasks ``grace`` seconds to finish (their replies go out as usual), then SIGKILL
        what is left (each child's process group) and reap all.

        Not SIGTERM: Flower's handler in a child would finish its task as failed without a reply, and a
        Flower 1.42 SuperNode then waits for that reply for ever. A killed task is answered by the
        SuperNode itself ("ClientApp stopped responding") once the task's token expires (at most 60 s).
        """
        self.reap()
        if not self.children:
            return
        log.info("waiting up to %.0fs for %d running task(s) to finish", self.grace, len(self.children))
        deadline = time.monotonic() + self.grace
        while self.children and time.monotonic() < deadline:
            time.sleep(0.05)
            self.reap()
        if self.children:
            running = ", ".join(f"task {c.task_id} of run {c.run_id} (child {pid})" for pid, c in self.children.items())
            log.warning("killing %d task(s) still running after %.0fs: %s", len(self.children), self.grace, running)
        for pid in self.children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:  # not (or no longer) leading its own group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.children.pop(pid)
