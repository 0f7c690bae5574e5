"""``data.holdout``: the grid a strategy trains on, without the held-out hospital's node.

The strategy samples training nodes from ``grid.get_node_ids()``; :class:`TrainingGrid` answers
without the held-out nodes, so the strategy never sends them a train message (the held-out hospital
refuses one anyway). Everything else goes to the wrapped grid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import Message
from flwr.serverapp import Grid
from flwr.supercore.run import Run


class TrainingGrid(Grid):
    """``grid`` whose node list leaves out the nodes ``excluded()`` names (asked at every call)."""

    def __init__(self, grid: Grid, excluded: Callable[[], set[int]]) -> None:
        self.grid = grid
        self.excluded = excluded

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(self, *args, **kwargs) -> Message:  # type: ignore[no-untyped-def]
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        held = self.excluded()
        return [n for n in self.grid.get_node_ids() if n not in held]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.grid.send_and_receive(messages, timeout=timeout)
