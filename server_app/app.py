"""ServerApp: compose the Hydra config from the run config, then run the federation.

This module stays light on purpose: Flower imports it under a process-wide import lock, and in a
simulation the same process loads the ClientApp and only then starts Ray, so every import made
here delays the whole simulation. The federation, with torch, is imported when the run starts.
"""

from __future__ import annotations

import logging
import sys

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


def setup_logging() -> None:
    logger = logging.getLogger("fedheart")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(levelname)s [fedheart] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point of the aggregator. Any error ends the run as failed, with its message."""
    from fedheart.config import load_config
    from server_app.federation import Federation
    from server_app.polling import PromptGrid
    from server_app.strategies import build_strategy

    setup_logging()
    cfg = load_config(str(context.run_config.get("overrides", "")))
    strategy = build_strategy(cfg)
    Federation(cfg, PromptGrid(grid), strategy, run_id=context.run_id).run()  # the training step: aggregation.mode
