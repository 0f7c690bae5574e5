"""What ``bench/perf.py --startup`` and ``--privacy`` measure: a fresh ClientApp process's start-up, the
bytes of one round's messages, and DP-SGD / SecAgg+ against plain FedAvg."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.perf_sim import DEFAULT_DATA, REPO_ROOT, load_window

HEAVY = ("torch", "pandas", "sklearn", "scipy", "opacus", "hydra", "omegaconf", "matplotlib", "boto3", "ray",
         "torch._dynamo")
# What a train message's fresh ClientApp process runs before its own work: the app module, the
# handlers (a module of their own since the app module was made light; before that the app module
# held them), then one training step through the code's default optimiser (torch.optim's classes
# import torch._dynamo on first use). Works on both layouts, so --app-root can point at old code.
STARTUP_PROBE = f"""
import json, sys, time
t = time.perf_counter()
import client_app.app
try:
    import client_app.handlers
except ImportError:
    pass
imported = time.perf_counter() - t
import numpy as np
from fedheart.model import build_model
from fedheart import training
if hasattr(training, "TensorBatches"):
    from fedheart.specs import TrainConfig
    batches = training.TensorBatches
else:  # the layout before fedheart.specs
    TrainConfig, batches = training.TrainConfig, training.make_loader
x = np.zeros((16, 4), dtype=np.float32)
training.train(build_model("logreg", 4), batches(x, np.zeros(16, dtype=np.float32), 16, seed=0), TrainConfig(), 1)
print(json.dumps({{"import_s": imported, "first_step_s": time.perf_counter() - t - imported,
                  "heavy": sorted(m for m in sys.modules if m in {HEAVY!r})}}))
"""


# Packages whose import cost --startup reports (cumulative, so sklearn includes the scipy.stats it imports).
IMPORT_BREAKDOWN = ("flwr", "torch", "sklearn", "scipy.stats", "pandas", "client_app.handlers")


def import_breakdown(importtime: str) -> dict[str, float]:
    """Cumulative seconds of each :data:`IMPORT_BREAKDOWN` package from ``python -X importtime``'s
    stderr (``import time: self [us] | cumulative | name``; a module is listed once, at its first import)."""
    out: dict[str, float] = {}
    for line in importtime.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[2].strip() in IMPORT_BREAKDOWN and parts[1].strip().isdigit():
            out.setdefault(parts[2].strip(), int(parts[1]) / 1e6)
    return out


def startup(repeats: int = 3, app_root: Path = REPO_ROOT) -> dict[str, Any]:
    """What a fresh ClientApp process pays before a train message's own work (:data:`STARTUP_PROBE`),
    with the import time of the heavy packages (``-X importtime``, which adds a little overhead).

    A SuperNode (deployment, ``--isolation subprocess``) starts one such process per message; a
    simulation's Ray actor pays the same imports once, on its first message.
    ``app_root``: another copy of the code (e.g. the state before a change) to compare.
    """
    row: dict[str, Any] = {"name": "clientapp-import", "app_root": str(app_root), "runs": []}
    with load_window(row):
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            out = subprocess.run([sys.executable, "-X", "importtime", "-c", STARTUP_PROBE], cwd=app_root,
                                 capture_output=True, text=True, check=True,
                                 env={**os.environ, "PYTHONPATH": str(app_root)})
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            probe = json.loads(out.stdout.strip().splitlines()[-1])
            row["runs"].append({"process_wall_s": time.perf_counter() - started, "import_s": probe["import_s"],
                                "first_step_s": probe["first_step_s"],
                                "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
                                "max_rss_mb": after.ru_maxrss / 1024,
                                "import_breakdown_s": import_breakdown(out.stderr)})
            row["heavy_modules"] = probe["heavy"]
    for key in ("process_wall_s", "import_s", "first_step_s", "cpu_s"):
        row[f"{key}_median"] = sorted(r[key] for r in row["runs"])[len(row["runs"]) // 2]
    row["import_breakdown_s_median"] = {
        name: sorted(r["import_breakdown_s"].get(name, 0.0) for r in row["runs"])[len(row["runs"]) // 2]
        for name in IMPORT_BREAKDOWN}
    return row


def message_bytes(overrides: list[str]) -> dict[str, int]:
    """Serialized size (Flower's protobuf) of one client's four messages in a round, built with the
    ServerApp's and ClientApp's own functions on the real Cleveland data (simulation counts no traffic)."""
    from flwr.app import MetricRecord, RecordDict
    from flwr.common.serde import recorddict_to_proto

    from fedheart import stats as fstats
    from fedheart.config import load_config
    from fedheart.hospital import configured_hospitals, evaluate_round, train_round
    from fedheart.model import build_model, get_weights
    from fedheart.protocol import parse_train, task_settings, train_settings
    from server_app.records import config_record, to_arrays

    cfg = load_config(overrides)
    data = list(configured_hospitals(cfg, root=DEFAULT_DATA).values())
    stats = fstats.GlobalStats.from_totals(fstats.combine([d.statistics() for d in data]))
    pre = data[0].preprocessor(stats)
    spec = cfg.model
    weights = get_weights(build_model(spec, pre.num_features, seed=cfg.seed))
    task = task_settings(cfg, stats.to_json())
    train_cfg = {**task, **train_settings(cfg)}
    new, train_metrics = train_round(data[0], pre, weights, spec, parse_train(train_cfg), seed=0, server_round=1)
    eval_metrics = evaluate_round(data[0], pre, new, spec)

    def size(content: dict) -> int:
        return recorddict_to_proto(RecordDict(content)).ByteSize()

    out = {"train-instruction": size({"arrays": to_arrays(weights), "config": config_record(train_cfg)}),
           "train-reply": size({"arrays": to_arrays(new), "metrics": MetricRecord(train_metrics)}),
           "evaluate-instruction": size({"arrays": to_arrays(new), "config": config_record(task)}),
           "evaluate-reply": size({"metrics": MetricRecord(eval_metrics)})}
    out["per-round"] = sum(out.values())
    out["weights"] = int(sum(w.nbytes for w in weights.values()))
    return out


def privacy_costs(rounds: int) -> dict[str, Any]:
    """DP-SGD and SecAgg+ against plain FedAvg for 4 and 16 clients, with the other engineers' benchmarks
    (bench/privacy_sweep.py ``cost``: the real Federation over an in-process grid; bench/secagg_cost.py
    ``measure``: real simulations), and bytes per client per round."""
    from bench.privacy_sweep import cost
    from fedheart.config import load_config

    report: dict[str, Any] = {"rounds": rounds}
    with load_window(report):
        report["bytes"] = {"fedavg": message_bytes([]), "dp-sgd": message_bytes(
            ["privacy=dp-sgd", "privacy.epsilon=1.0"]), "fedavg, model=mlp": message_bytes(["model=mlp"])}
        cfg = load_config([f"rounds={rounds}"])
        report["dp_sgd"] = cost(cfg, [4, 16], seed=0)
    secagg = REPO_ROOT / "bench" / "results" / "secagg" / "secagg_cost.json"
    if secagg.is_file():  # bench/secagg_cost.py's own run (real simulations, under the e2e lock)
        report["secagg"] = json.loads(secagg.read_text())
    else:
        from bench.secagg_cost import measure

        report["secagg"] = measure(clients=(4, 16), rounds=rounds, data_dir=DEFAULT_DATA)
    return report
