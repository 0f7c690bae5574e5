"""The warm parent and its forked children: what the parent imports once (and must never hold), how a
child is forked for one approved task, and what the child does before Flower's ``run_clientapp``."""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import random
import signal
import sys
import threading
import traceback
from collections.abc import Sequence

from launcher.hospital.bundles import install_once, quicken_object_pulls
from launcher.hospital.errors import LauncherError

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
# Logged by each child once it holds its task's message (the task is RUNNING at the SuperNode): the child's
# pid, so that every message can be told apart by the process that ran it.
RUNNING = "task %d of run %d: child %d runs its %s message (node %d)"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


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
    done: list[str] = []
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


def freeze_heap() -> int:
    """Collect, then move every object the warm parent holds now into the collector's permanent
    generation (``gc.freeze``); returns how many. A forked child's collections then skip the ~400k
    objects of the preloaded stack: without it, a full collection in a child reads all of them,
    writing their headers, and so copies ~100 MiB of the parent's pages (measured here, a child that
    allocates 200k objects and collects twice: 0.64-0.73 s against 0.05 s)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


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


# -- forking --------------------------------------------------------------------------------------
def fork_child(runtime_api_address: str, token: str, insecure: bool, certificates: bytes | None,
               task_id: int = 0, run_id: int = 0, fab_hash: str = "") -> int:
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
        code = run_child(runtime_api_address, token, insecure, certificates, parent, task_id, run_id, fab_hash)
    except SystemExit as exc:  # flwr_exit: 0 for a completed task, 1 otherwise
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)  # never return into the parent's loop, run no parent exit handler


def die_with_parent(parent_pid: int) -> bool:
    """Have the kernel SIGKILL this child the moment its parent dies (Linux ``PR_SET_PDEATHSIG``);
    False where that is not available.

    Preferred to Flower's own parent watch (``run_clientapp(parent_pid=...)``), which raises SIGINT in
    the child: Flower's handler then finishes the task as failed without a reply, and a Flower 1.42
    SuperNode waits for that message's reply for ever (it serves nothing else until restarted). A
    SIGKILLed child leaves its task without heartbeats instead: the SuperNode answers the message
    itself with Flower's ``ClientApp stopped responding`` error once the task's token expires (at most
    60 s) and goes on with its next message, as when its own ClientApp process is killed.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent_pid:  # the parent died before the call: no signal would come
        os._exit(1)
    return True


def run_child(runtime_api_address: str, token: str, insecure: bool, certificates: bytes | None,
              parent_pid: int, task_id: int = 0, run_id: int = 0, fab_hash: str = "") -> int:
    """In the forked child: own process group, default signals, killed with its parent, fresh seeds,
    then Flower's ClientApp runtime for this one task (it installs the bundle, loads and runs the app,
    reports the task); :data:`RUNNING` is logged once the task's message is pulled. With the approved
    ``fab_hash``, the bundle is installed once per hash and must hash to it, and message parts are
    pulled promptly (:mod:`launcher.hospital.bundles`)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    with contextlib.suppress(OSError):  # the parent signals the child's whole group; a terminal's Ctrl-C
        os.setpgid(0, 0)                # reaches the parent only
    watched = die_with_parent(parent_pid)
    forget_app_modules()
    reseed()
    from flwr.supernode.runtime import run_clientapp as flower

    pull = flower.pull_task_input

    def pull_and_report(client: object) -> tuple:
        message, context, run, fab = pull(client)
        log.info(RUNNING, task_id, run_id, os.getpid(), message.metadata.message_type, int(context.node_id))
        return message, context, run, fab

    flower.pull_task_input = pull_and_report  # run_clientapp looks it up in its module when called
    quicken_object_pulls(flower)
    if fab_hash:
        install_once(flower, fab_hash)
    flower.run_clientapp(runtime_api_address=runtime_api_address, token=token, insecure=insecure,
                         certificates=None if insecure else certificates,
                         parent_pid=None if watched else parent_pid)
    return 0
