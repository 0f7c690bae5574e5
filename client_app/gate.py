"""The hospital's gate: every message passes its policy, privacy ledger and audit trail.

Where a hospital keeps them (set by the hospital, never by the server):
- node-config ``policy-path``: its policy file (``fedheart.safeguard.policy``; read only);
- node-config ``state-dir``: its lifetime ledger and audit trail.
In a simulation, where Flower sets the node config, ``$FEDHEART_POLICY`` and ``$FEDHEART_STATE_ROOT``
(state folder ``<root>/<hospital>``) stand in for them. Without a policy the server's settings are
followed as sent (the aggregator is trusted); without a state folder the run's ledger lives in the
SuperNode's memory (``context.state``) and nothing is audited.

Whatever happens, a failure reaches the server as safe text only (``fedheart.safeguard.scrub``);
the full text goes to the hospital's own log.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode

from client_app.privacy import load_ledger, save_ledger
from fedheart.privacy.ledger import Ledger
from fedheart.safeguard import audit
from fedheart.safeguard.apphash import app_identity
from fedheart.safeguard.budget import BudgetBook, RunBudget
from fedheart.safeguard.files import locked
from fedheart.safeguard.policy import Policy, PolicyError, Refused, load_policy
from fedheart.safeguard.request import Decision, check_request, requested
from fedheart.safeguard.scrub import safe_reason

log = logging.getLogger("fedheart.hospital")

ENV_POLICY = "FEDHEART_POLICY"
ENV_STATE_ROOT = "FEDHEART_STATE_ROOT"


@dataclass
class Where:
    """This node's data file and hospital name, before the file is read."""

    path: str
    name: str
    key: str = ""  # simulation: the hospital's own key, which names its state folder whatever the server lists


@dataclass
class Session:
    """What a handler works with: the accepted config and, where the hospital has them, its policy
    and this run's entry in its lifetime ledger."""

    kind: str
    msg: Message
    config: dict[str, Any]
    where: Where
    context: Context
    policy: Policy | None = None
    book: BudgetBook | None = None
    run: RunBudget | None = None
    state: Path | None = None  # the hospital's state folder (node-config state-dir), where it has one

    @property
    def simulation(self) -> bool:
        return "data-path" not in self.context.node_config

    def ledger(self) -> Ledger:
        """The run's privacy ledger: from the state folder, else from the SuperNode's memory."""
        if self.run is not None:
            return self.run.ledger
        return load_ledger(self.context)

    def keep(self, ledger: Ledger) -> None:
        """Store the ledger after a release (the state folder is written when the message ends)."""
        if self.run is not None:
            self.run.take(ledger)
        else:
            save_ledger(self.context, ledger)


Handler = Callable[[Session], RecordDict]
Locate = Callable[[Context, dict[str, Any]], Where]


def _policy_and_state(context: Context, name: str) -> tuple[Policy | None, Path | None]:
    node = context.node_config
    simulation = "data-path" not in node
    policy_path = str(node.get("policy-path", "")) or (os.environ.get(ENV_POLICY, "") if simulation else "")
    state = str(node.get("state-dir", ""))
    if not state and simulation and os.environ.get(ENV_STATE_ROOT):
        state = str(Path(os.environ[ENV_STATE_ROOT]) / name)
    policy = load_policy(policy_path) if policy_path else None
    if policy is not None and not state:
        raise PolicyError(f"{policy_path}: a hospital policy needs a state folder for its ledger and audit trail "
                          "(node-config state-dir)")
    return policy, (Path(state) if state else None)


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, mtime: float, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str) -> str:
    """SHA-256 of a data file (what its lifetime ledger is keyed by)."""
    st = os.stat(path)
    return _file_sha256(path, st.st_mtime, st.st_size)


def _reply_digest(reply: Message) -> str:
    if reply.has_error():
        return hashlib.sha256(reply.error.reason.encode()).hexdigest()
    return reply.content.object_id  # Flower's SHA-256 of the serialised reply content


def _error(msg: Message, reason: str) -> Message:
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)


def handle(kind: str, msg: Message, context: Context, locate: Locate, work: Handler) -> Message:
    """Check the request, do ``work``, record it; any failure becomes a safe error reply."""
    received = datetime.now(UTC).isoformat(timespec="milliseconds")  # the handler's first line (audit, bench)
    sent = dict(msg.content["config"]) if "config" in msg.content.config_records else {}
    try:
        where = locate(context, sent)
        policy, state = _policy_and_state(context, where.key or where.name)
        if policy is None:
            _warn_trusted(where.name)
        if state is None:  # no state folder: today's behaviour, nothing recorded at the hospital
            return _run(msg, Session(kind, msg, sent, where, context, policy), work)
        with locked(state):
            return _audited(msg, context, kind, sent, where, policy, state, work, received)
    except Exception as exc:  # before the state folder could record it (policy file, data location)
        log.error("hospital: %s message failed: %s", kind, exc, exc_info=exc)
        return _error(msg, safe_reason(exc))


@functools.lru_cache(maxsize=64)
def _warn_trusted(name: str) -> None:
    """Once per hospital and process: without a policy the aggregator decides what is released."""
    log.warning("hospital %s: no hospital policy (node-config policy-path): the aggregator is trusted with every "
                "privacy decision; see docs/privacy.md", name)


def _run(msg: Message, session: Session, work: Handler) -> Message:
    return Message(work(session), reply_to=msg)


def _audited(msg: Message, context: Context, kind: str, sent: dict[str, Any], where: Where,
             policy: Policy | None, state: Path, work: Handler, received: str) -> Message:
    """One message under the state folder's lock: decision, work, ledger and audit line (``received``:
    when the hospital's handler began, ``time``: when the line was written)."""
    book = BudgetBook.open(state, file_sha256(where.path), where.name)
    run = book.run(context.run_id)
    session = Session(kind, msg, sent, where, context, policy, book, run, state)
    entry: dict[str, Any] = {"received": received, "run": str(context.run_id), "message": kind,
                             "node": int(context.node_id),
                             "app": app_identity(), "data_sha256": book.data_sha256,
                             "requested": requested(sent)}
    try:
        if policy is not None:
            decision: Decision = check_request(policy, kind, sent, simulation=session.simulation,
                                               evaluations_done=run.evaluations, hospital=where.name)
            session.config = decision.config
            entry["overrides"] = decision.overrides
        reply = _run(msg, session, work)
        book.save()
        entry["decision"] = "accepted"
    except Exception as exc:
        reason = safe_reason(exc)
        refused = isinstance(exc, Refused | PolicyError)
        if refused:
            log.warning("hospital %s: %s message refused: %s", where.name, kind, exc)
        else:
            log.error("hospital %s: %s message failed: %s", where.name, kind, exc, exc_info=exc)
        reply = _error(msg, reason)
        entry |= {"decision": "refused" if refused else "failed", "reason": reason}
        book = BudgetBook.open(state, book.data_sha256, where.name)  # as saved: nothing of this message
        run = book.run(context.run_id)
    entry |= {"epsilon": run.epsilon, "lifetime": book.lifetime(), "reply_sha256": _reply_digest(reply)}
    audit.append(state, entry)
    return reply
