"""The ServerApp's reply polling of fedheart (``server_app.polling.PromptGrid``), with Flower only.

bench/perf_deploy.py runs the floor in a deployment with ``prompt-grid = true``, so that (b) waits for
replies as (a) does: Flower 1.42's deployment grid polls every 3 s, fedheart's at a tenth of the time
already waited (5 ms to 0.5 s). A copy, not an import: the floor app imports nothing but Flower.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

MIN_POLL_S = 0.005
MAX_POLL_S = 0.5


class PromptGrid(Grid):
    """``grid`` whose ``send_and_receive`` polls at a tenth of the time waited; the rest is delegated."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def set_run(self, run):  # type: ignore[no-untyped-def]
        self.grid.set_run(run)

    @property
    def run(self):  # type: ignore[no-untyped-def]
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
        waiting = set(self.push_messages(messages))
        started = time.monotonic()
        replies: list[Message] = []
        while waiting:
            got = list(self.pull_messages(waiting))
            replies.extend(got)
            waiting.difference_update(m.metadata.reply_to_message_id for m in got)
            waited = time.monotonic() - started
            if not waiting or (timeout is not None and waited >= timeout):
                break
            pause = min(MAX_POLL_S, max(MIN_POLL_S, 0.1 * waited))
            time.sleep(pause if timeout is None else min(pause, timeout - waited))
        return replies
