"""The training step of a round, composed into :class:`~server_app.federation.Federation`.

``PlainTraining`` sends the strategy's train messages and lets it aggregate the updates;
``server_app.secagg.SecAggTraining`` runs Flower's SecAgg+ workflow instead, so the server sees only
the sum. Either step ends in ``Federation.aggregate_train`` (``min_replies``, the privacy filter, the
strategy's aggregation). ``training_step(cfg)`` picks the one ``aggregation.mode`` names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from flwr.app import ConfigRecord

from fedheart.config import AppConfig
from server_app.holdout import TrainingGrid

if TYPE_CHECKING:
    from server_app.federation import Federation


class TrainingStep(Protocol):
    def after_statistics(self, federation: Federation) -> None:
        """Checks that need the hospitals' statistics (SecAgg+: the masked sum's capacity)."""

    def train(self, federation: Federation, server_round: int, arrays: Any,
              config: ConfigRecord) -> tuple[Any, list[dict]]:
        """One round's training: the new arrays and one train row per hospital that contributed."""


class PlainTraining:
    """Each hospital's update reaches the strategy (through the privacy filter)."""

    def after_statistics(self, federation: Federation) -> None:
        return None

    def train(self, federation: Federation, server_round: int, arrays: Any,
              config: ConfigRecord) -> tuple[Any, list[dict]]:
        federation.await_hospitals(server_round, "train")
        messages = federation.privacy.configure_train(server_round, arrays, config,
                                                      TrainingGrid(federation.grid, federation.held_out))
        return federation.aggregate_train(server_round, arrays, federation.exchange("train", server_round, messages))


def training_step(cfg: AppConfig) -> TrainingStep:
    """The training step of ``aggregation.mode``."""
    if cfg.aggregation.mode == "secagg":
        from server_app.secagg import SecAggTraining

        return SecAggTraining(cfg)
    return PlainTraining()
