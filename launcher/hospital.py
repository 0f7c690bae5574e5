"""The hospital's launcher: runs only approved apps, each message in a child forked from a warm parent.

    python -m launcher.hospital --runtime-api-address 127.0.0.1:PORT --policy FILE --state-dir DIR
                                [--poll-interval 0.1] [--insecure | --root-certificates CA]
                                [--superexec-auth-secret-file FILE] [--patience 30] [--flwr-home DIR]
                                [--preload MOD,MOD,... | --preload none]

It replaces ``flower-superexec`` beside a SuperNode started with ``--isolation process`` (whose
Runtime API listens on ``--host 127.0.0.1 --port PORT``; see docs/security.md). Like Flower's
SuperExec it asks that Runtime API for the next ClientApp task (``AcquireTask``, task type
``flwr-clientapp``); each task names its app by the SHA-256 of the app bundle (``task.fab_hash``,
``launcher.fab.app_hash``) and carries a token valid for that task only. Then:

- **Approval, before anything of the app runs.** The hash must be in the hospital's policy file
  (``approved-apps``, read again for every task, so an edit applies at once). An unapproved task is
  answered here: the launcher pulls the task's input the way ``flwr-clientapp`` does (the app bundle
  arrives as bytes and is dropped unopened: nothing of it is written, imported or run), pushes an
  error reply (``ErrorCode.INVALID_FAB``, the code of Flower's own FAB refusal) whose reason names
  the hash, finishes the task as failed, and appends a ``refused`` line to the hospital's audit trail
  (``STATE_DIR/audit.jsonl``, under the state folder's lock). A policy file that cannot be read
  refuses every task (the full error goes to this log only).
- **Warm start.** The parent imports Flower's ClientApp runtime and the heavy stack (torch, numpy,
  pandas, scikit-learn, opacus, hydra: ``--preload``) once, and forks one child per approved task.
  The child reseeds Python's ``random``, numpy's global generator and torch's from ``os.urandom``
  (a fork copies the parent's generator state), then calls Flower's own ``run_clientapp`` with the
  task's token: it pulls the input, installs the bundle, loads and runs the ClientApp, pushes the
  reply and the task's status, exactly as ``flwr-clientapp`` would. The parent never holds a module
  of the app itself (``fedheart``, ``client_app``, ``server_app``): Flower's loader would serve
  those from ``sys.modules`` instead of the bundle's. It does no torch operation and starts no
  thread before forking.
- **Private app folder.** Bundles are installed under this launcher's own ``FLWR_HOME`` (a fresh
  folder of mode 0700 unless ``--flwr-home`` names one): Flower reuses an installed folder named by
  the first 8 hex digits of the hash without checking it, so a shared ``~/.flwr`` could hold
  another bundle's files under an approved name. Only approved bundles are ever installed here.
- **Processes.** Children are reaped as they end (each in its own process group; it ends itself if
  this launcher dies, as Flower's ``--parent-pid`` does). SIGTERM or Ctrl-C stops polling, sends
  SIGTERM to every child (Flower's handler reports the task stopped), SIGKILL after ``--grace``
  seconds, and exits 0. When the Runtime API has not answered for ``--patience`` seconds (its
  SuperNode is gone) the launcher stops its children the same way and exits 1; a bad policy or
  option exits 2.

Flower internals used (there is no public entry point for them; tests/unit/test_hospital_launcher.py
fails naming any that moves): :data:`FLOWER_SYMBOLS`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("fedheart.launcher.hospital")

# The app's own top-level packages: never kept imported in the warm parent (Flower's load_app would
# serve them from sys.modules instead of the task's bundle).
APP_PACKAGES = ("fedheart", "client_app", "server_app")
# What a fedheart ClientApp imports (measured: ~10 s of a fresh process on 2 busy cores), plus Flower's
# ClientApp runtime. Imported once by the parent; a name that is not installed is skipped with a warning.
DEFAULT_PRELOAD = (
    "numpy", "pandas", "torch", "torch.utils.data", "torch.optim", "sklearn.model_selection",
    "sklearn.metrics", "opacus", "opacus.accountants", "opacus.data_loader", "hydra", "omegaconf", "yaml",
    "flwr.app", "flwr.clientapp", "flwr.clientapp.mod", "flwr.client.mod", "flwr.compat.common.recorddict_compat",
    "flwr.cli.install", "flwr.supernode.runtime.run_clientapp",
)
# Flower symbols this launcher relies on, by module (internals where Flower has no public entry point).
FLOWER_SYMBOLS: dict[str, tuple[str, ...]] = {
    "flwr.app": ("Error", "Message"),
    "flwr.common.constant": ("ErrorCode", "SubStatus"),
    "flwr.proto.runtime_pb2": ("AcquireTaskRequest",),
    "flwr.supercore.constant": ("TaskType",),
    "flwr.supercore.runtime": ("RuntimeHttpClient",),
    "flwr.supercore.interceptors": ("RuntimeTokenHttpInterceptor", "RuntimeVersionHttpInterceptor",
                                    "SuperExecAuthHttpInterceptor"),
    "flwr.supernode.runtime.run_clientapp": ("run_clientapp", "pull_task_input", "push_message",
                                             "push_task_output"),
}
ACQUIRE_TASK_METHOD = "/flwr.proto.Runtime/AcquireTask"  # what the SuperNode's SuperExec auth protects
EXIT_STOPPED, EXIT_API_GONE, EXIT_CONFIG = 0, 1, 2


class LauncherError(RuntimeError):
    """A configuration the launcher cannot start with (exit 2); the message says what."""


class _Stop(BaseException):
    """SIGTERM/SIGINT: leave the poll loop (raised only while no acquired task is being handed on)."""


# -- the decision ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Approval:
    """Whether a task's app may run here; ``reason`` (sent to the server) names the hash when not."""

    approved: bool
    fab_hash: str
    reason: str = ""


def decide(fab_hash: str, approved_apps: Iterable[str]) -> Approval:
    """Approve exactly the bundles whose SHA-256 the policy lists (case-insensitive); nothing else."""
    digest = (fab_hash or "").strip().lower()
    if not digest:
        return Approval(False, "", "refused by the hospital: the task names no app hash")
    if digest in {h.lower() for h in approved_apps}:
        return Approval(True, digest)
    return Approval(False, digest, f"refused by the hospital: app {digest} is not in its policy's approved-apps")


# -- the parent's modules -------------------------------------------------------------------------
def app_modules() -> list[str]:
    """Names in ``sys.modules`` that belong to the app's own packages."""
    return [name for name in sys.modules if name.split(".", 1)[0] in APP_PACKAGES]


def forget_app_modules() -> list[str]:
    """Drop the app's own modules from ``sys.modules`` (objects already taken from them keep working)."""
    names = app_modules()
    for name in names:
        del sys.modules[name]
    return names


def preload(modules: Sequence[str]) -> list[str]:
    """Import the heavy stack once; returns the names imported. App packages are refused. The root
    logger is put back as it was (opacus calls ``logging.basicConfig`` on import, which would print
    every DEBUG line of Flower's logger in each child)."""
    done = []
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        _import_all(modules, done)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return done


def _import_all(modules: Sequence[str], done: list[str]) -> None:
    for name in modules:
        if name.split(".", 1)[0] in APP_PACKAGES:
            raise LauncherError(f"--preload {name}: the app's own modules must not be preloaded (Flower would "
                                "serve them instead of the task's bundle)")
        try:
            importlib.import_module(name)
        except ImportError as exc:
            log.warning("preload: %s not imported (%s)", name, exc)
            continue
        done.append(name)


@dataclass(frozen=True)
class Safeguards:
    """The hospital's own policy and audit code (its installed ``fedheart.safeguard``, not a bundle's)."""

    load_policy: Callable[[Path], Any]
    policy_error: type[Exception]
    append: Callable[[Path, dict[str, Any]], Any]
    locked: Callable[[Path], Any]


def hospital_safeguards() -> Safeguards:
    """Import ``fedheart.safeguard``'s policy, audit and lock functions, keep them, and drop the
    modules from ``sys.modules`` again so that a child's loader imports the bundle's own ``fedheart``."""
    from fedheart.safeguard import audit, files, policy

    found = Safeguards(policy.load_policy, policy.PolicyError, audit.append, files.locked)
    forget_app_modules()
    return found


def reseed() -> None:
    """Fresh seeds from the OS for Python's ``random``, numpy's global generator and torch's default
    one (each only if imported): a forked child starts with a copy of its parent's state."""
    random.seed(os.urandom(32))
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed(np.frombuffer(os.urandom(32), dtype=np.uint32))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(int.from_bytes(os.urandom(8), "big"))


# -- the launcher ---------------------------------------------------------------------------------
@dataclass
class Child:
    task_id: int
    run_id: int
    fab_hash: str
    started: float = field(default_factory=time.monotonic)


@dataclass
class HospitalLauncher:
    """Polls one SuperNode's Runtime API; approves, refuses and forks (see the module docstring)."""

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

    # HTTP clients ------------------------------------------------------------------------------
    def _client(self, component: str, token: str | None = None) -> Any:
        from flwr.supercore.interceptors import (
            RuntimeTokenHttpInterceptor,
            RuntimeVersionHttpInterceptor,
            SuperExecAuthHttpInterceptor,
        )
        from flwr.supercore.runtime import RuntimeHttpClient

        interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name=component)]
        if token is not None:
            interceptors.append(RuntimeTokenHttpInterceptor(token))
        elif self.superexec_auth_secret:
            interceptors.append(SuperExecAuthHttpInterceptor(master_secret=self.superexec_auth_secret,
                                                             protected_methods={ACQUIRE_TASK_METHOD}))
        # No retry invoker: Flower's retries forever; this loop bounds its own (--patience).
        return RuntimeHttpClient.from_server_address(
            server_address=self.runtime_api_address, insecure=self.insecure,
            root_certificates=None if self.insecure else self.root_certificates, interceptors=interceptors)

    # the policy ---------------------------------------------------------------------------------
    def approval(self, fab_hash: str) -> Approval:
        """The decision for one task, from the policy file as it is now (unreadable: refused)."""
        assert self.safeguards is not None
        try:
            policy = self.safeguards.load_policy(self.policy_path)
        except self.safeguards.policy_error as exc:
            log.error("policy %s unreadable, refusing the task: %s", self.policy_path, exc)
            return Approval(False, (fab_hash or "").lower(), "refused by the hospital: its policy file cannot be read")
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
        log.info("polling the Runtime API at %s every %.2fs (policy %s, state %s)", self.runtime_api_address,
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
        except _Stop:
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
            raise _Stop

    def dispatch(self, task: Any, token: str) -> None:
        """Refuse or fork one acquired task; a SIGTERM meanwhile waits until the task is handed on."""
        self._critical = True
        try:
            self._dispatch(task, token)
        finally:
            self._critical = False
        if self._stopping:
            raise _Stop

    def _dispatch(self, task: Any, token: str) -> None:
        approval = self.approval(task.fab_hash)
        if not approval.approved:
            log.warning("task %d of run %d: %s", task.task_id, task.run_id, approval.reason)
            self.reply_error(task, token, approval.fab_hash, approval.reason, "refused")
            return
        log.info("task %d of run %d: app %s approved, forking", task.task_id, task.run_id, approval.fab_hash)
        try:
            pid = self.fork(token)
        except OSError as exc:
            log.error("task %d of run %d: cannot fork: %s", task.task_id, task.run_id, exc)
            self.reply_error(task, token, approval.fab_hash, "the hospital's launcher could not start the task",
                             "failed")
            return
        self.children[pid] = Child(task.task_id, task.run_id, approval.fab_hash)

    # refusing ---------------------------------------------------------------------------------
    def reply_error(self, task: Any, token: str, fab_hash: str, reason: str, decision: str) -> None:
        """Answer the task with an error reply naming ``reason``, finish it as failed, audit it.

        Mirrors the error path of Flower's ``run_clientapp`` (pull the input, push
        ``Message(Error(code, reason), reply_to=message)``, push the task output) without installing,
        importing or running anything of the bundle.
        """
        from flwr.app import Error, Message
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

        assert self.safeguards is not None
        client = self._client("flwr-clientapp", token)
        message = context = None
        sent = "not sent"
        try:
            message, context, _run, fab = pull_task_input(client)
            del fab  # the bundle's bytes: never unpacked
            push_message(client, Message(Error(code=ErrorCode.INVALID_FAB, reason=reason), reply_to=message), context)
            sent = "sent"
        except Exception as exc:  # the SuperNode replies for us once the token expires
            log.error("task %d of run %d: the error reply could not be sent: %s", task.task_id, task.run_id, exc)
            sent = f"not sent: {type(exc).__name__}"
        finally:
            with contextlib.suppress(Exception):
                push_task_output(client, context, SubStatus.FAILED, reason)
            client.close()
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
    def fork(self, token: str) -> int:
        """Fork one child for an approved task; returns its pid (the child never returns)."""
        if threading.active_count() != 1:
            raise OSError(f"the warm parent runs {threading.active_count()} threads: forking it is not safe")
        leftover = app_modules()
        if leftover:  # nothing should have imported them; a child must load the bundle's own
            log.warning("dropping app modules from the parent before forking: %s", leftover[:5])
            forget_app_modules()
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid:
            with contextlib.suppress(OSError):  # also done by the child: whichever runs first
                os.setpgid(pid, pid)
            return pid
        code = 1
        try:
            code = run_child(self.runtime_api_address, token, self.insecure, self.root_certificates, parent)
        except SystemExit as exc:  # flwr_exit: 0 for a completed task, 1 otherwise
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)  # never return into the parent's loop, run no parent exit handler

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
        """SIGTERM every child (its process group), SIGKILL what is left after ``grace``, reap all."""
        self.reap()
        if not self.children:
            return
        log.info("stopping %d running task(s)", len(self.children))
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while self.children and time.monotonic() < deadline:
            time.sleep(0.05)
            self.reap()
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.children.pop(pid)


def run_child(runtime_api_address: str, token: str, insecure: bool, certificates: bytes | None,
              parent_pid: int) -> int:
    """In the forked child: own process group, default signals, fresh seeds, then Flower's ClientApp
    runtime for this one task (it installs the bundle, loads and runs the app, reports the task)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    with contextlib.suppress(OSError):  # the parent signals the child's whole group; a terminal's Ctrl-C
        os.setpgid(0, 0)                # reaches the parent only
    forget_app_modules()
    reseed()
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    run_clientapp(runtime_api_address=runtime_api_address, token=token, insecure=insecure,
                  certificates=None if insecure else certificates, parent_pid=parent_pid)
    return 0


# -- command line ---------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m launcher.hospital", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime-api-address", required=True, metavar="HOST:PORT",
                        help="the SuperNode's Runtime API (its --host/--port; started with --isolation process)")
    parser.add_argument("--policy", required=True, type=Path, help="the hospital's policy file (approved-apps)")
    parser.add_argument("--state-dir", required=True, type=Path, help="the hospital's state folder (audit trail)")
    parser.add_argument("--poll-interval", type=float, default=0.1, help="seconds between AcquireTask polls")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--insecure", action="store_true", help="plain HTTP to the Runtime API (loopback only)")
    tls.add_argument("--root-certificates", type=Path, help="CA of the Runtime API's TLS certificate")
    parser.add_argument("--superexec-auth-secret-file", type=Path,
                        help="the SuperNode's --superexec-auth-secret-file (signs AcquireTask)")
    parser.add_argument("--patience", type=float, default=30.0,
                        help="exit 1 once the Runtime API has not answered for this many seconds")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds a child has to stop before SIGKILL")
    parser.add_argument("--flwr-home", type=Path,
                        help="where approved bundles are installed (default: a fresh private folder, removed at exit)")
    parser.add_argument("--preload", default=",".join(DEFAULT_PRELOAD),
                        help="comma-separated modules the warm parent imports ('none': none)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s hospital-launcher[%(process)d]: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    own_home = None

    def stop_early(_signum: int, _frame: Any) -> None:
        raise _Stop

    for sig in (signal.SIGTERM, signal.SIGINT):  # while starting (preloading takes seconds)
        signal.signal(sig, stop_early)
    try:
        if not 0.01 <= args.poll_interval <= 60:
            raise LauncherError(f"--poll-interval {args.poll_interval}: must be between 0.01 and 60 seconds")
        safeguards = hospital_safeguards()
        policy_path = args.policy.expanduser().resolve()
        try:
            policy = safeguards.load_policy(policy_path)
        except safeguards.policy_error as exc:
            raise LauncherError(str(exc)) from None
        if not policy.approved_apps:
            log.warning("%s approves no app (approved-apps): every task will be refused", policy_path)
        state_dir = args.state_dir.expanduser().resolve()
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        certificates = args.root_certificates.expanduser().read_bytes() if args.root_certificates else None
        secret = args.superexec_auth_secret_file.expanduser().read_bytes() if args.superexec_auth_secret_file else None
        if secret == b"":
            raise LauncherError(f"{args.superexec_auth_secret_file}: empty SuperExec auth secret")
        if args.flwr_home:
            home = args.flwr_home.expanduser().resolve()
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
        else:
            home = own_home = Path(tempfile.mkdtemp(prefix="fedheart-launcher-flwr-home-"))
        os.environ["FLWR_HOME"] = str(home)  # the children install approved bundles here, and only there
        modules = [m.strip() for m in args.preload.split(",") if m.strip() and args.preload.strip().lower() != "none"]
        started = time.monotonic()
        loaded = preload(modules)
        log.info("warm parent ready: %d modules preloaded in %.1fs, FLWR_HOME %s", len(loaded),
                 time.monotonic() - started, home)
        launcher = HospitalLauncher(args.runtime_api_address, policy_path, state_dir, insecure=args.insecure,
                                    root_certificates=certificates, superexec_auth_secret=secret,
                                    poll_interval=args.poll_interval, patience=args.patience, grace=args.grace,
                                    safeguards=safeguards)
        return launcher.run()
    except (LauncherError, OSError) as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    except _Stop:  # SIGTERM or Ctrl-C while starting
        return EXIT_STOPPED
    finally:
        if own_home is not None:
            shutil.rmtree(own_home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
