"""``data.holdout``: the grid a strategy trains on, without the held-out hospital's node.

The strategy samples training nodes from ``grid.get_node_ids()``; :class:`TrainingGrid` answers
without the held-out nodes, so the strategy never sends them a train message (the held-out hospital
refuses one anyway). Everything else goes to the wrapped grid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.serverapp import Grid

from server_app.polling import ForwardingGrid


class TrainingGrid(ForwardingGrid):
    """``grid`` whose node list leaves out the nodes ``excluded()`` names (asked at every call)."""

    def __init__(self, grid: Grid, excluded: Callable[[], set[int]]) -> None:
        super().__init__(grid)
        self.excluded = excluded

    def get_node_ids(self) -> Iterable[int]:
        held = self.excluded()
        return [n for n in self.grid.get_node_ids() if n not in held]
