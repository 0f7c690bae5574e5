"""The hospital's launcher: runs only approved apps, each message in a child forked from a warm parent.

    python -m launcher.hospital --runtime-api-address 127.0.0.1:PORT --policy FILE --state-dir DIR
                                [--poll-interval 0.1] [--insecure | --root-certificates CA]
                                [--superexec-auth-secret-file FILE] [--patience 30] [--grace 10]
                                [--flwr-home DIR] [--preload MOD,MOD,... | --preload none]

It replaces ``flower-superexec`` beside a SuperNode started with ``--isolation process`` (whose
Runtime API listens on ``--host 127.0.0.1 --port PORT``; see docs/security.md). Like Flower's
SuperExec it asks that Runtime API for the next ClientApp task (``AcquireTask``, task type
``flwr-clientapp``); each task names its app by the SHA-256 of the app bundle (``task.fab_hash``,
``launcher.fab.app_hash``) and carries a token valid for that task only. Then:

- **Approval, before anything of the app runs** (:mod:`.approval`, :mod:`.runtime`). The hash must be
  in the hospital's policy file (``approved-apps``, read again for every task, so an edit applies at
  once). An unapproved task is answered here: the launcher pulls the task's input the way
  ``flwr-clientapp`` does (the app bundle arrives as bytes and is dropped unopened: nothing of it is
  written, imported or run), pushes an error reply (``ErrorCode.INVALID_FAB``, the code of Flower's
  own FAB refusal) whose reason names the hash, finishes the task as failed, and appends a
  ``refused`` line to the hospital's audit trail (``STATE_DIR/audit.jsonl``, under the state
  folder's lock). A policy file that cannot be read refuses every task (the full error goes to this
  log only).
- **Warm start** (:mod:`.warm`). The parent imports Flower's ClientApp runtime and the heavy stack
  (torch, numpy, pandas, scikit-learn, opacus, hydra: ``--preload``) once, and forks one child per
  approved task. The child reseeds Python's ``random``, numpy's global generator and torch's from
  ``os.urandom`` (a fork copies the parent's generator state), then calls Flower's own
  ``run_clientapp`` with the task's token: it pulls the input, installs the bundle, loads and runs
  the ClientApp, pushes the reply and the task's status, exactly as ``flwr-clientapp`` would, with
  two changes (:mod:`.bundles`): the bundle, which must hash to the approved ``fab_hash``, is
  installed once per hash and re-checked file by file for every task, and message parts the
  SuperNode is still fetching are asked for again after 0.05 s instead of Flower's 1 s. Once
  it holds the message it logs ``task T of run R: child PID runs its TYPE message (node N)``
  (:data:`RUNNING`). The parent never holds a module of the app itself (``fedheart``,
  ``client_app``, ``server_app``): Flower's loader would serve those from ``sys.modules`` instead of
  the bundle's. It does no torch operation and starts no thread before forking; once preloaded it
  freezes its heap (``gc.freeze``), so that a child's garbage collections skip the parent's objects
  instead of copying their pages.
- **Private app folder.** Bundles are installed under this launcher's own ``FLWR_HOME`` (a fresh
  folder of mode 0700 unless ``--flwr-home`` names one): Flower reuses an installed folder named by
  the first 8 hex digits of the hash without checking it, so a shared ``~/.flwr`` could hold
  another bundle's files under an approved name. Only approved bundles are ever installed here, and
  a folder is used only while its files match the record made when it was installed.
- **Processes** (:mod:`.loop`). Children are reaped as they end; each runs in its own process group
  and is SIGKILLed by the kernel if this launcher dies (Linux ``PR_SET_PDEATHSIG``; elsewhere
  Flower's ``--parent-pid`` watch): the SuperNode then answers its message with Flower's
  "ClientApp stopped responding" error once the task's token expires (at most 60 s) and goes on, as
  when a stock ClientApp process is killed. SIGTERM or Ctrl-C stops polling, gives running tasks
  ``--grace`` seconds to finish, SIGKILLs the rest and exits 0. When the Runtime API has not
  answered for ``--patience`` seconds (its SuperNode is gone) the launcher stops its children the
  same way and exits 1; a bad policy or option exits 2 (:mod:`.errors`, :mod:`.cli`).

Flower internals used (there is no public entry point for them; tests/unit/test_hospital_launcher.py
fails naming any that moves): :data:`FLOWER_SYMBOLS`.
"""

from launcher.hospital.approval import Approval, Safeguards, decide, hospital_safeguards, unreadable_policy
from launcher.hospital.cli import _parser, main
from launcher.hospital.errors import EXIT_API_GONE, EXIT_CONFIG, EXIT_STOPPED, LauncherError, Stop
from launcher.hospital.loop import READY, Child, HospitalLauncher
from launcher.hospital.runtime import ACQUIRE_TASK_METHOD, FLOWER_SYMBOLS, RuntimeApi, refuse_task
from launcher.hospital.warm import (
    APP_PACKAGES,
    DEFAULT_PRELOAD,
    RUNNING,
    app_modules,
    die_with_parent,
    forget_app_modules,
    fork_child,
    freeze_heap,
    preload,
    reseed,
    run_child,
)

__all__ = [
    "ACQUIRE_TASK_METHOD",
    "APP_PACKAGES",
    "DEFAULT_PRELOAD",
    "EXIT_API_GONE",
    "EXIT_CONFIG",
    "EXIT_STOPPED",
    "FLOWER_SYMBOLS",
    "READY",
    "RUNNING",
    "Approval",
    "Child",
    "HospitalLauncher",
    "LauncherError",
    "RuntimeApi",
    "Safeguards",
    "Stop",
    "_parser",
    "app_modules",
    "decide",
    "die_with_parent",
    "forget_app_modules",
    "fork_child",
    "freeze_heap",
    "hospital_safeguards",
    "main",
    "preload",
    "refuse_task",
    "reseed",
    "run_child",
    "unreadable_policy",
]
