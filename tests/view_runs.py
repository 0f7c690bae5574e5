"""Run folders for the view's tests, written with the server's own writers (fedheart.runs, fedheart.summary).

``finished``: a 3-round DP-SGD run with its summary and final model; ``running``: 2 of 4 rounds done, no
summary yet. Numbers are drawn from a seeded generator: tests compare what the view shows with these files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedheart.config import AppConfig, to_yaml
from fedheart.runs import TIMINGS, RunDir, write_json, write_text
from fedheart.schema import HOSPITALS
from fedheart.summary import federation_metrics, summary_table

FINISHED, RUNNING = "20261201-120000-fedavg-run111", "live-run"
ARRIVAL = ["hungarian", "va", "cleveland", "switzerland"]  # reply order, not the schema's


def _round(run: RunDir, rng: np.random.Generator, r: int, budget: float | None, run_id: str) -> dict[str, dict]:
    evals = {}
    train = []
    for i, name in enumerate(ARRIVAL):
        row = {"round": r, "phase": "train", "hospital": name, "train-loss": float(rng.uniform(0.2, 0.6)),
               "num-examples": 100.0 + i}
        if budget:
            row["epsilon"] = budget * r / 4 * (0.8 + 0.05 * i)
        train.append(row)
    for h in HOSPITALS:
        pos, neg = rng.integers(0, 5, 10).tolist(), rng.integers(0, 5, 10).tolist()
        evals[h.key] = {"accuracy": float(rng.uniform(0.6, 0.9)), "auc": float(rng.uniform(0.6, 0.95)),
                        "loss": float(rng.uniform(0.3, 0.6)), "num-examples": float(sum(pos) + sum(neg)),
                        "hist-pos": pos, "hist-neg": neg}
    fed = federation_metrics(evals) | {"train-loss": float(np.mean([t["train-loss"] for t in train])),
                                       "seconds": float(rng.uniform(3, 6))}
    run.append_metrics(train + [{"round": r, "phase": "evaluate", "hospital": n,
                                 **{k: v for k, v in m.items() if not k.startswith("hist-")}}
                                for n, m in evals.items()] + [{"round": r, "phase": "federation", "hospital": "all",
                                                               **fed}])
    for phase in ("train", "evaluate"):
        run.append_metrics([{"round": r, "phase": phase, "hospital": n, "node": str(1000 + i),
                             "seconds": float(rng.uniform(1, 4)) * (3 if n == "va" else 1), "ok": True}
                            for i, n in enumerate(ARRIVAL)] + [{"round": r, "phase": phase, "hospital": "all",
                                                                "seconds": 5.0, "run": run_id}], TIMINGS)
    return evals


def _config(rounds: int, strategy: str = "fedavg", privacy: str = "none", epsilon: float | None = None) -> str:
    """config.yaml as the server writes it (``to_yaml``; the defaults set by hand: no Hydra, fast)."""
    cfg = AppConfig()
    cfg.rounds, cfg.strategy.name, cfg.privacy.mode, cfg.privacy.epsilon = rounds, strategy, privacy, epsilon
    return to_yaml(cfg)


def write_runs(root: Path) -> dict[str, Path]:
    """Both run folders under ``root``; returns their paths by name."""
    rng = np.random.default_rng(17)
    done = RunDir(root / FINISHED)
    write_text(done.path / "config.yaml", _config(3, privacy="dp-sgd", epsilon=3.0))
    write_json(done.path / "tracking.json", {"experiment": "x", "run_id": 111})
    for r in (1, 2, 3):
        final = _round(done, rng, r, 3.0, "111")
    _, data = summary_table(final, {h.key: {"majority-accuracy": 0.55, "local-accuracy": 0.7, "local-auc": 0.75}
                                        for h in HOSPITALS}, {h.key: 100 + i for i, h in enumerate(HOSPITALS)})
    write_json(done.path / "summary.json", data | {"rounds": 3, "seconds": 42.0, "strategy": "fedavg",
                                                    "stopped_reason": None})
    done.save_final_model({"linear.weight": rng.normal(size=(1, 13)), "linear.bias": np.zeros(1)},
                          {"model": "logreg", "rounds": 3})
    live = RunDir(root / RUNNING)
    write_text(live.path / "config.yaml", _config(4, strategy="fedprox"))
    for r in (1, 2):
        _round(live, rng, r, None, "222")
    return {FINISHED: done.path, RUNNING: live.path}
