"""Sweep, audit and cost parts of the privacy benchmark (``bench/privacy.py``).

Every run is the real ServerApp ``server_app.federation.Federation`` (statistics phase, then
rounds driven through its public ``start()`` / ``run_round()``) and the real ClientApp
(``client_app.app.app``) of each hospital over a ``launcher.loopback.LoopbackGrid``: every
message is serialised as Flower does, Flower's FedAvg aggregates (weighted by training rows), each
hospital keeps its DP-SGD ledger in its node state. The finish phase (final model files, baselines,
report) is not run: what is measured is the model after the last round. DP noise is reproducible
per seed (``privacy.noise_seed``, an experiments-only setting), as the in-process loop this
replaced had it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

ROOT = Path(__file__).resolve().parent.parent  # client_app/, server_app/ and launcher/ sit beside fedheart/
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fedheart.config import AppConfig, load_config  # noqa: E402
from fedheart.hospital import HospitalData, configured_hospitals, load_hospital  # noqa: E402
from fedheart.model import build_model, set_weights  # noqa: E402
from fedheart.preprocess import Preprocessor  # noqa: E402
from fedheart.privacy import NOISE  # noqa: E402
from fedheart.runs import ENV_OUTPUT_DIR  # noqa: E402
from fedheart.sources import ENV_DATA_DIR, partition_file  # noqa: E402
from fedheart.stats import GlobalStats  # noqa: E402
from fedheart.summary import federation_metrics  # noqa: E402
from fedheart.synthetic import to_uci_csv  # noqa: E402

DELTA = 1e-5
METHOD = "federation"  # how the sweep, audit and cost parts run, recorded with their results
DATA_DIR = ROOT.parent / "shared" / "data" / "uci-heart-disease"  # the real, read-only UCI files
# An MLP that overfits the ~600 training rows: the membership-inference attack has something to find.
AUDIT = ["model=mlp", "model.hidden=256", "model.layers=2", "model.dropout=0.0", "train.optimizer=adam",
         "train.lr=0.003", "train.local_steps=200", "train.batch_size=16"]


def mean_sd(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    return float(np.mean(finite)), float(statistics.stdev(finite)) if len(finite) > 1 else 0.0


@contextlib.contextmanager
def quiet_flower() -> Iterator[None]:
    """Flower's INFO lines (every configure and aggregate step) off while a run goes."""
    logger = logging.getLogger("flwr")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def data_dir() -> str:
    """The UCI files the hospitals read: ``$FEDHEART_DATA_DIR``, else ``shared/`` beside the checkout."""
    return os.environ.get(ENV_DATA_DIR) or str(DATA_DIR)


def synthetic_clients(cfg: AppConfig, count: int, seed: int, folder: Path) -> Path:
    """``count`` client files in ``folder`` (for ``data.partition_dir``): client i resamples, with
    replacement, the rows of hospital i mod 4 (as many as that hospital has).

    Each client splits its file as a hospital does, so a row drawn twice can land on both sides of
    its split: the 16-client accuracy is optimistic; the cost part measures time.
    """
    with mock.patch.dict(os.environ, {ENV_DATA_DIR: data_dir()}):
        parents = list(configured_hospitals(cfg).values())
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    width = len(str(count - 1))
    for i in range(count):
        parent = parents[i % len(parents)]
        frame = parent.table.frame
        (folder / f"client-{i:0{width}d}-{parent.name}.data").write_text(
            to_uci_csv(frame.iloc[rng.integers(0, len(frame), len(frame))]))
    return folder


def client_data(cfg: AppConfig) -> list[HospitalData]:
    """Each client's data as its ClientApp loads it (same file, split seed, pipeline and fraction)."""
    d = cfg.data
    if d.partition_dir:
        files = [partition_file(d.partition_dir, i) for i in range(cfg.min_hospitals)]
        return [load_hospital(f, seed=d.split_seed, pipeline=d.pipeline, train_fraction=d.train_fraction,
                              name=f.stem) for f in files]
    with mock.patch.dict(os.environ, {ENV_DATA_DIR: data_dir()}):
        return list(configured_hospitals(cfg).values())


def membership_auc(model: nn.Module, pres: list[Preprocessor], hospitals: list[HospitalData]) -> float:
    """Loss-threshold attack: AUC of -loss for 'training row' vs 'held-out row' over all hospitals."""
    model.eval()
    losses, member = [], []
    with torch.no_grad():
        for h, pre in zip(hospitals, pres, strict=True):
            for frame, y, label in ((h.train_frame, h.y_train, 1), (h.test_frame, h.y_test, 0)):
                logits = model(torch.as_tensor(pre.transform(frame)))
                loss = nn.functional.binary_cross_entropy_with_logits(
                    logits, torch.as_tensor(y, dtype=torch.float32), reduction="none")
                losses.append(loss.numpy())
                member.append(np.full(len(y), label))
    return float(roc_auc_score(np.concatenate(member), -np.concatenate(losses)))


def run_config(cfg: AppConfig, epsilon: float | None, seed: int, clients: Path | None = None,
               count: int | None = None) -> AppConfig:
    """``cfg`` for one benchmark run: ``epsilon`` None = no DP (``privacy=none``, same training), else
    DP-SGD at ``epsilon`` and delta 1e-5 with this seed's noise; ``clients``: a folder of ``count`` files."""
    if epsilon is None:
        privacy = replace(cfg.privacy, mode="none")
    else:
        privacy = replace(cfg.privacy, mode="dp-sgd", epsilon=epsilon, delta=DELTA, noise_multiplier=None,
                          noise_seed=zlib.crc32(f"bench-{seed}".encode()))
    out = replace(cfg, privacy=privacy, seed=seed, baselines=False, resume=None,
                  output=replace(cfg.output, run_name=None))
    if clients is not None:
        assert count is not None
        out = replace(out, data=replace(out.data, partition_dir=str(clients)), min_hospitals=count)
    return out


def federate(cfg: AppConfig, work: Path) -> dict[str, Any]:
    """One run of the real Federation and ClientApps (``cfg`` from :func:`run_config`); its numbers."""
    import client_app.app as client
    from launcher.loopback import LoopbackGrid
    from server_app.federation import Federation
    from server_app.records import from_arrays
    from server_app.strategies import build_strategy

    nodes = [{"partition-id": i, "num-partitions": cfg.min_hospitals} for i in range(cfg.min_hospitals)]
    outputs = tempfile.mkdtemp(prefix="run-", dir=work)  # its own folder: run folders are named by the second
    t0 = time.perf_counter()
    with mock.patch.dict(os.environ, {ENV_DATA_DIR: data_dir(), ENV_OUTPUT_DIR: outputs}), quiet_flower():
        federation = Federation(cfg, LoopbackGrid(client.app, nodes), build_strategy(cfg), run_id=1)
        arrays = federation.start()
        per: dict[str, dict] = {}
        noise: dict[str, float] = {}
        for server_round in range(1, cfg.rounds + 1):
            result = federation.run_round(server_round, arrays)
            if result.stopped:
                break
            arrays, per = result.arrays, result.evaluation
            noise |= {str(r["hospital"]): float(r[NOISE]) for r in result.train_rows if NOISE in r}
        if not per:  # the budget stopped the run before round 1: the initial model
            per = federation.evaluate(0, arrays)
    seconds = time.perf_counter() - t0
    weights = from_arrays(arrays)
    fed = federation_metrics(per)
    hospitals = client_data(cfg)
    stats = GlobalStats.from_json(federation.preprocessing) if federation.preprocessing else None
    pres = [h.preprocessor(stats) for h in hospitals]
    model = build_model(cfg.model, pres[0].num_features, seed=cfg.seed)
    set_weights(model, weights)
    epsilons = dict(federation.privacy.epsilons)
    dp = cfg.privacy.mode == "dp-sgd"
    return {"mean-accuracy": fed["mean-accuracy"], "mean-auc": fed["mean-auc"], "pooled-auc": fed["pooled-auc"],
            "hospitals": {k: {"accuracy": float(v["accuracy"]), "auc": float(v["auc"])} for k, v in per.items()},
            "epsilon": max(epsilons.values()) if dp and epsilons else float("inf"), "epsilons": epsilons,
            "noise-multipliers": noise, "mia-auc": membership_auc(model, pres, hospitals),
            "rounds": federation.history.last_round, "stopped_reason": federation.privacy.stopped_reason,
            "seconds": seconds}


def sweep(cfg: AppConfig, plain: AppConfig, epsilons: list[float], seeds: list[int]) -> dict:
    """``cfg`` (privacy=dp-sgd and its tuned training) for finite epsilons; ``plain`` (no DP) for inf."""
    rows = {}
    with tempfile.TemporaryDirectory(prefix="fedheart-privacy-sweep-") as work:
        for eps in epsilons:
            runs = []
            for seed in seeds:
                private = not math.isinf(eps)
                run = federate(run_config(cfg if private else plain, eps if private else None, seed), Path(work))
                runs.append(run)
                print(f"[privacy] epsilon {eps} seed {seed}: mean acc {run['mean-accuracy']:.3f} "
                      f"AUC {run['mean-auc']:.3f} spent {run['epsilon']:.3f} MIA {run['mia-auc']:.3f} "
                      f"({run['seconds']:.0f}s)", flush=True)
            rows[str(eps)] = {"method": METHOD, "runs": runs, **{k: mean_sd([r[k] for r in runs]) for k in
                                               ("mean-accuracy", "mean-auc", "pooled-auc", "epsilon", "mia-auc",
                                                "seconds")}}
    return rows


def audit(common: list[str], epsilons: list[float], seeds: list[int]) -> dict:
    """Loss-threshold membership inference on an overfitting MLP, without DP and with DP-SGD."""
    plain, private = load_config([*common, *AUDIT]), load_config(["privacy=dp-sgd", *common, *AUDIT])
    return sweep(private, plain, epsilons, seeds)


def cost(cfg: AppConfig, client_counts: list[int], seed: int) -> dict:
    """Wall time of DP-SGD (epsilon 1) vs plain FedAvg, same rounds and steps (``cfg``'s), 4 and 16 clients."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="fedheart-privacy-cost-") as tmp:
        work = Path(tmp)
        for count in client_counts:
            folder = None if count == len(cfg.data.hospitals) else \
                synthetic_clients(cfg, count, seed, work / f"clients-{count}")
            plain = federate(run_config(cfg, None, seed, folder, count), work)
            private = federate(run_config(cfg, 1.0, seed, folder, count), work)
            out[str(count)] = {"plain-seconds": plain["seconds"], "dp-seconds": private["seconds"],
                               "ratio": private["seconds"] / plain["seconds"],
                               "plain-accuracy": plain["mean-accuracy"], "dp-accuracy": private["mean-accuracy"]}
            print(f"[privacy] cost, {count} clients: plain {plain['seconds']:.1f}s, DP-SGD "
                  f"{private['seconds']:.1f}s (x{out[str(count)]['ratio']:.1f})", flush=True)
    return out
