"""Reading hospitals' replies: the reason of a failed one, as the server logs and reports it."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message


def error_message(reason: str) -> str:
    """The exception's own message from a failed reply's reason. In a simulation Flower puts the Ray
    actor's whole traceback there (dozens of lines per hospital); the traceback itself stays in the
    simulation's log (a deployment: the SuperNode's)."""
    text = reason.strip().removesuffix("'>").rstrip()
    if "Message: " in text:  # Flower's "Exception ClientAppException occurred. Message: ..."
        return text.rsplit("Message: ", 1)[1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else text


def error_reasons(replies: Iterable[Message]) -> list[str]:
    """``node N: message`` for each failed reply."""
    return [f"node {m.metadata.src_node_id}: {error_message(m.error.reason)}" for m in replies if m.has_error()]
