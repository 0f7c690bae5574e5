"""ServerApp: FedAvg over a tiny ArrayRecord for ``rounds`` train + evaluate message rounds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from floorapp.polling import PromptGrid

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    nodes, rounds = int(cfg["nodes"]), int(cfg["rounds"])
    strategy = FedAvg(fraction_train=float(cfg["fraction-train"]), fraction_evaluate=float(cfg["fraction-evaluate"]),
                      min_train_nodes=1, min_evaluate_nodes=1, min_available_nodes=nodes)
    marks: list[float] = []
    epochs: list[float] = []

    def mark(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        marks.append(time.perf_counter())  # called before round 1 and after every round
        epochs.append(time.time())
        return None

    if bool(cfg.get("prompt-grid", False)):  # fedheart's reply polling (bench/perf_deploy.py)
        grid = PromptGrid(grid)

    started = time.perf_counter()
    strategy.start(grid, ArrayRecord([np.zeros(int(cfg["size"]), dtype=np.float32)]), num_rounds=rounds,
                   evaluate_fn=mark)
    if str(cfg["out"]):
        Path(str(cfg["out"])).write_text(json.dumps({
            "rounds": rounds, "nodes": nodes, "round_s": list(np.diff(marks)), "marks_epoch": epochs,
            "seconds": time.perf_counter() - started}))
