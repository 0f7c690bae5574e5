"""A Grid whose ``send_and_receive`` notices replies soon after they arrive.

Flower 1.42's grids poll for replies at a fixed interval: every 0.1 s in a simulation
(``InMemoryGrid``) and every 3 s in a deployment (``HttpGrid``), so each message phase ends up to
that long after its last reply. :class:`PromptGrid` polls often at first and then less, at a tenth
of the time already waited (between 5 ms and 0.5 s): a reply is noticed at most ~10 % late and a
long phase costs few polls. Everything else goes to the wrapped grid. It also notes when each node's
reply came (``reply_seconds``): the per-hospital timings of the run folder (``timings.jsonl``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid
from flwr.supercore.run import Run

MIN_POLL_S = 0.005
MAX_POLL_S = 0.5


def poll_interval(waited: float) -> float:
    """Seconds to sleep before the next poll, after ``waited`` seconds without all replies."""
    return min(MAX_POLL_S, max(MIN_POLL_S, 0.1 * waited))


class ForwardingGrid(Grid):
    """A Grid that passes every call on to ``grid``: the base of the grids that change one call."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(self, *args, **kwargs) -> Message:  # type: ignore[no-untyped-def]
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.grid.send_and_receive(messages, timeout=timeout)


class PromptGrid(ForwardingGrid):
    """``grid`` with a prompter ``send_and_receive``; see the module docstring."""

    def __init__(self, grid: Grid) -> None:
        super().__init__(grid)
        self.reply_seconds: dict[int, float] = {}  # last send_and_receive: node id -> seconds to its reply

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push ``messages``; return the replies that came within ``timeout`` seconds (None: no limit)."""
        pushed = time.monotonic()  # a hospital's time counts from the push (in a deployment, seconds of TLS)
        waiting = set(self.push_messages(messages))
        started = time.monotonic()
        replies: list[Message] = []
        self.reply_seconds = {}
        while waiting:
            got = list(self.pull_messages(waiting))
            replies.extend(got)
            waiting.difference_update(m.metadata.reply_to_message_id for m in got)
            waited = time.monotonic() - started
            self.reply_seconds.update((m.metadata.src_node_id, time.monotonic() - pushed) for m in got)
            if not waiting or (timeout is not None and waited >= timeout):
                break
            pause = poll_interval(waited)
            time.sleep(pause if timeout is None else min(pause, timeout - waited))
        return replies
