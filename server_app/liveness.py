"""The liveness wait before a phase samples its hospitals: a deadline where Flower has none."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedheart.config import CENTRAL_MODES, AppConfig
from server_app.errors import FederationError
from server_app.strategy_state import base_strategy

log = logging.getLogger("fedheart.server")


def await_hospitals(cfg: AppConfig, grid: Grid, strategy: Strategy, held_out: Callable[[], set[int]],
                    server_round: int, phase: str) -> None:
    """Wait, at most ``round_timeout``, for ``min_hospitals`` nodes; then size the strategy's sample.

    Flower's ``sample_nodes`` sizes its sample from the nodes online when it is called, then
    waits with no deadline for ``min_available_nodes``: a hospital that is down for good would
    stall the run, and one that is back soon would make the round leave out a random healthy
    hospital. Here the wait has a deadline; after it the round goes on with the hospitals online
    if there are at least ``min_replies`` (never under central DP, whose accounting assumes
    every hospital), else the run stops with the reason.
    """
    want, deadline, warned = cfg.min_hospitals, time.monotonic() + cfg.round_timeout, False
    while (online := len(list(grid.get_node_ids()))) < want and time.monotonic() < deadline:
        if not warned:
            log.info("Round %d (%s): %d of %d hospitals online; waiting up to %g s (round_timeout)",
                     server_round, phase, online, want, cfg.round_timeout)
            warned = True
        time.sleep(1.0)  # polling Flower's node list, as sample_nodes does
    base = base_strategy(strategy)
    held = len(held_out() & set(grid.get_node_ids())) if phase == "train" else 0
    if online >= want:
        base.min_available_nodes = want - held  # type: ignore[attr-defined]
        return
    why = (f"round {server_round} ({phase}): only {online} of min_hospitals={want} hospitals online after "
           f"waiting {cfg.round_timeout:g} s (round_timeout)")
    if online < cfg.min_replies:
        raise FederationError(f"{why}; at least {cfg.min_replies} required (min_replies)")
    if cfg.privacy.mode in CENTRAL_MODES:
        raise FederationError(f"{why}; privacy={cfg.privacy.mode} accounts for every hospital in every "
                              "round, so the run cannot go on without one")
    log.warning("%s; going on with those %d", why, online)
    base.min_available_nodes = online - held  # type: ignore[attr-defined]
