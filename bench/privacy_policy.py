"""Strict-policy rows of the privacy benchmark (``bench/privacy.py --policy-rows`` or ``--parts policy``).

The real ClientApp (``client_app.app.app``) driven by the real ``server_app.federation.Federation``
over a ``launcher.loopback.LoopbackGrid`` (every message serialised as Flower does), each of the four
hospitals with the strict policy below and a fresh temporary state folder per run. The server asks for
``privacy=dp-sgd privacy.epsilon=<row's epsilon> rounds=15 seed=<seed>`` (``conf/privacy/dp-sgd.yaml``
defaults, plus ``--policy-overrides``).

Under ``release.evaluation: dp`` what the server receives from the evaluations is noise-dominated, so
quality is measured here, from the run's ``final_model.pt`` and the federated (noisy) preprocessing
statistics, on each hospital's true test rows with ``evaluate_round`` without DP: mean accuracy and
mean AUC over hospitals, and the pooled-test AUC of the four hospitals' exact histograms. The epsilon
spent is read from each hospital's lifetime ledger (``fedheart.safeguard.budget.books``), with what
the statistics release and the evaluations cost in it (at the hospital's own delta).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent  # client_app/, server_app/ and launcher/ sit beside fedheart/
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fedheart.config import load_config  # noqa: E402
from fedheart.histograms import auc_from_histograms  # noqa: E402
from fedheart.hospital import evaluate_round, load_hospital  # noqa: E402
from fedheart.privacy.ledger import Ledger, calibrate_noise  # noqa: E402
from fedheart.safeguard.budget import books  # noqa: E402
from fedheart.schema import FIELDS, hospital  # noqa: E402
from fedheart.sources import hospital_file  # noqa: E402
from fedheart.stats import GlobalStats  # noqa: E402

POLICY_DELTA = 1e-6
EVALUATION_NOISE = 50.0  # the strict default of release.evaluation-noise-multiplier
MAX_EVALUATIONS = 16
POLICY = """\
privacy:
  require: dp-sgd
  max-epsilon-per-run: {epsilon}
  lifetime-epsilon: {lifetime}
  delta: {delta}
  min-noise-multiplier: 0.5
data:
  split-seed: 43
  train-fraction: 0.66
release:
  baselines: false
  tracking: false
  evaluation: {evaluation}
  max-evaluations-per-run: {evaluations}
"""
DATA_DIR = ROOT.parent / "shared" / "data" / "uci-heart-disease"  # the real, read-only UCI files


def policy_text(epsilon: float, evaluation: str = "dp", evaluations: int = MAX_EVALUATIONS,
                delta: float = POLICY_DELTA) -> str:
    # "1.0e-06", not "1e-06": PyYAML (YAML 1.1) reads an exponent without a dot as a string
    return POLICY.format(epsilon=float(epsilon), lifetime=100.0, delta=f"{delta:.1e}", evaluation=evaluation,
                         evaluations=evaluations)


def ledger_costs(history: list, delta: float) -> dict[str, float]:
    """Epsilon (at ``delta``) of the statistics alone, of statistics + evaluations, and of everything."""
    entries = [tuple(e) for e in history]
    stats = entries[:1]  # the statistics release is the run's first entry
    evals = [e for e in entries[1:] if e[:2] == (EVALUATION_NOISE, 1.0)]  # the DP evaluations
    return {"statistics": Ledger(history=stats).epsilon(delta),
            "statistics+evaluations": Ledger(history=stats + evals).epsilon(delta),
            "total": Ledger(history=entries).epsilon(delta)}


def _is_default(col: str, stats: GlobalStats) -> bool:
    """Whether the server fell back to the schema's public mean and std (mid-range, range / 4) for ``col``."""
    spec = FIELDS[col]
    width = float(spec.high - spec.low)
    return math.isclose(stats.mean[col], spec.low + width / 2) and math.isclose(stats.std[col], width / 4)


def policy_run(common: list[str], epsilon: float, seed: int, overrides: list[str], work: Path,
               evaluation: str = "dp", delta: float = POLICY_DELTA) -> dict[str, Any]:
    """One run of the real apps under the strict policy; quality measured from the final model."""
    import client_app.app as client
    from launcher.loopback import LoopbackGrid
    from server_app.federation import Federation
    from server_app.strategies import build_strategy

    t0 = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix=f"policy-e{epsilon:g}-s{seed}-", dir=work))
    policy = folder / "policy.yaml"
    policy.write_text(policy_text(epsilon, evaluation, delta=delta))
    cfg = load_config(["privacy=dp-sgd", f"privacy.epsilon={epsilon}", "rounds=15", f"seed={seed}", *common,
                       *overrides, "output.run_name=run"])
    names = list(cfg.data.hospitals)
    nodes = [{"partition-id": i, "num-partitions": len(names), "policy-path": str(policy),
              "state-dir": str(folder / "state" / name)} for i, name in enumerate(names)]
    data_dir = os.environ.get("FEDHEART_DATA_DIR") or str(DATA_DIR)
    with mock.patch.dict(os.environ, {"FEDHEART_DATA_DIR": data_dir, "FEDHEART_OUTPUT_DIR": str(folder / "outputs")}):
        federation = Federation(cfg, LoopbackGrid(client.app, nodes), build_strategy(cfg), run_id=1)
        history = federation.run()
    seconds = time.perf_counter() - t0
    weights = {k: v.numpy() for k, v in torch.load(federation.run_dir.path / "final_model.pt").items()}
    stats = GlobalStats.from_json(federation.preprocessing)
    spec = cfg.model
    per, ledgers = {}, {}
    for i, name in enumerate(names):  # the hospital's true test rows (its policy's split), without DP
        data = load_hospital(hospital_file(hospital(name), data_dir), seed=43, pipeline=cfg.data.pipeline,
                             train_fraction=0.66, name=name)
        per[name] = evaluate_round(data, data.preprocessor(stats), weights, spec)
        (book,) = books(Path(nodes[i]["state-dir"]))
        run = book.runs["1"]
        ledgers[name] = {"epsilon": run.epsilon, "reserved": run.reserved, "delta": run.delta,
                         "evaluations": run.evaluations, "noise-multiplier": run.calibrated_noise,
                         "public-rows": run.public_rows, "true-rows": len(data.y_train),
                         "costs": ledger_costs(run.history, run.delta), "history": run.history}
    pos = np.sum([m["hist-pos"] for m in per.values()], axis=0)
    neg = np.sum([m["hist-neg"] for m in per.values()], axis=0)
    reported = [float(m["accuracy"]) for m in history.final.values()]
    return {"mean-accuracy": float(np.mean([m["accuracy"] for m in per.values()])),
            "mean-auc": float(np.nanmean([m["auc"] for m in per.values()])),
            "pooled-auc": auc_from_histograms(pos, neg),
            "server-mean-accuracy": float(np.mean(reported)) if reported else math.nan,
            "epsilon": max(v["epsilon"] for v in ledgers.values()), "rounds": history.last_round,
            "stopped_reason": federation.privacy.stopped_reason, "seconds": seconds,
            "missing-indicators": sorted(k for k, v in stats.missing_rate.items() if v > 0),
            "public-defaults": sorted(k for k in stats.mean if _is_default(k, stats)),
            "hospitals": {k: {"accuracy": float(v["accuracy"]), "auc": float(v["auc"])} for k, v in per.items()},
            "ledgers": ledgers}


def noise_costs(common: list[str], overrides: list[str], epsilon: float = 1.0) -> dict[str, dict[str, float]]:
    """The calibrated DP-SGD noise multiplier of each hospital under each accounting choice (analytic).

    Cumulative from the bench's no-policy setting to the strict policy: delta 1e-5 without
    evaluations; delta 1e-6; plus the 16 reserved DP evaluations at z = 50. The statistics release
    (z = 20) is in all of them; the noisy count changes the sampling rate only by its noise (~20 rows).
    """
    cfg = load_config(["privacy=dp-sgd", f"privacy.epsilon={epsilon}", "rounds=15", *common, *overrides])
    data_dir = os.environ.get("FEDHEART_DATA_DIR") or str(DATA_DIR)
    stats = Ledger(history=[(cfg.privacy.stats_noise_multiplier, 1.0, 1)])
    settings = {"delta 1e-5, no evaluations": (1e-5, ()), "delta 1e-6, no evaluations": (POLICY_DELTA, ()),
                "delta 1e-6, 16 evaluations at z = 50 (strict policy)":
                    (POLICY_DELTA, ((EVALUATION_NOISE, 1.0, MAX_EVALUATIONS),))}
    out: dict[str, dict[str, float]] = {}
    for name in cfg.data.hospitals:
        data = load_hospital(hospital_file(hospital(name), data_dir), seed=43, pipeline=cfg.data.pipeline,
                             train_fraction=0.66, name=name)
        rows = len(data.y_train)
        batches = max(math.ceil(rows / min(cfg.train.batch_size, rows)), 1)
        steps = cfg.rounds * cfg.train.local_steps
        out[name] = {label: max(calibrate_noise(epsilon, delta, 1 / batches, steps, stats, reserved=reserved), 0.5)
                     for label, (delta, reserved) in settings.items()}
        out[name]["rows"] = rows
    # what each fixed release costs alone, at delta 1e-6
    out["alone at delta 1e-6"] = {
        "statistics (z = 20)": stats.epsilon(POLICY_DELTA),
        "16 evaluations (z = 50)": Ledger(history=[(EVALUATION_NOISE, 1.0, MAX_EVALUATIONS)]).epsilon(POLICY_DELTA),
        "statistics + 16 evaluations": Ledger(history=[*stats.history, (EVALUATION_NOISE, 1.0, MAX_EVALUATIONS)]
                                              ).epsilon(POLICY_DELTA)}
    return out


def variant_label(overrides: list[str], evaluation: str = "dp", delta: float = POLICY_DELTA) -> str:
    """What a row changes from the strict policy and the dp-sgd defaults ('' = neither)."""
    policy = ([f"evaluation: {evaluation}"] if evaluation != "dp" else []) + \
        ([f"delta: {delta:g}"] if delta != POLICY_DELTA else [])
    return " ".join(overrides) + (f" (policy {', '.join(policy)})" if policy else "")


def training(common: list[str], overrides: list[str]) -> dict[str, Any]:
    """The DP-SGD training the server asks for in a policy row (dp-sgd defaults plus ``overrides``)."""
    cfg = load_config(["privacy=dp-sgd", "rounds=15", *common, *overrides])
    t = cfg.train
    return {"rounds": cfg.rounds, "batch_size": t.batch_size, "local_steps": t.local_steps,
            "local_epochs": t.local_epochs, "lr": t.lr, "weight_decay": t.weight_decay,
            "max_grad_norm": cfg.privacy.max_grad_norm}


def training_label(train: dict[str, Any]) -> str:
    """``B 32, 50 steps, lr 0.1, C 1``: batch, local steps, lr and clipping norm (what decides the model's noise)."""
    steps = f"{train['local_epochs']} epochs" if train.get("local_epochs") else f"{train['local_steps']} steps"
    decay = f", wd {train['weight_decay']:g}" if train.get("weight_decay") else ""
    return f"B {train['batch_size']}, {steps}, lr {train['lr']:g}, C {train['max_grad_norm']:g}{decay}"


def _one(args: tuple) -> dict[str, Any]:  # a worker process of policy_rows
    torch.set_num_threads(1)
    return policy_run(*args)


def policy_rows(common: list[str], epsilons: list[float], seeds: list[int], overrides: list[str],
                mean_sd: Any, evaluation: str = "dp", delta: float = POLICY_DELTA, jobs: int = 1) -> dict[str, dict]:
    """``{label: row}`` for every epsilon: the runs and mean ± sd over seeds (``jobs`` runs at a time, each
    in its own process: a run is single-threaded)."""
    label = variant_label(overrides, evaluation, delta).strip()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="fedheart-policy-bench-") as work, \
            ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for eps in epsilons:
            runs = list(pool.map(_one, [(common, eps, seed, overrides, Path(work), evaluation, delta)
                                        for seed in seeds]))
            for seed, run in zip(seeds, runs, strict=True):
                costs = {k: round(v["costs"]["statistics+evaluations"], 3) for k, v in run["ledgers"].items()}
                print(f"[privacy] policy epsilon {eps} seed {seed} {label}: mean acc "
                      f"{run['mean-accuracy']:.3f} pooled AUC {run['pooled-auc']:.3f} (server saw acc "
                      f"{run['server-mean-accuracy']:.3f}) spent {run['epsilon']:.3f}, statistics+evaluations "
                      f"{costs} ({run['seconds']:.0f}s)", flush=True)
            key = f"{eps:g}" + (f" | {label}" if label else "") + (f" | seeds {seeds}" if seeds != [0, 1, 2] else "")
            rows[key] = {"epsilon-target": eps, "overrides": overrides, "evaluation": evaluation, "delta": delta,
                         "label": label, "seeds": seeds, "runs": runs, "train": training(common, overrides),
                         **{k: mean_sd([r[k] for r in runs]) for k in
                            ("mean-accuracy", "mean-auc", "pooled-auc", "server-mean-accuracy", "epsilon",
                             "seconds")},
                         "stats-evals-epsilon": mean_sd([max(v["costs"]["statistics+evaluations"]
                                                             for v in r["ledgers"].values()) for r in runs]),
                         "noise-multiplier": mean_sd([float(np.mean([v["noise-multiplier"] for v in
                                                                     r["ledgers"].values()])) for r in runs])}
    return rows


def mean_sd_of(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def gradient_noise(run: dict) -> float:
    """Mean over hospitals of the DP-SGD noise on the averaged gradient, in units of the clipping norm:
    z / (noisy rows x sampling rate), comparable across batch sizes (z alone grows with the batch)."""
    values = []
    for ledger in run["ledgers"].values():
        training = [e for e in ledger["history"][1:] if tuple(e[:2]) != (EVALUATION_NOISE, 1.0)]
        if training and ledger.get("public-rows"):
            z, q, _ = training[0]
            values.append(z / max(ledger["public-rows"] * q, 1.0))
    return float(np.mean(values)) if values else math.nan


def markdown(results: dict, fmt: Any) -> list[str]:
    """The 'Strict hospital policy' section of privacy.md."""
    rows = results.get("policy", {})
    if not rows:
        return []
    lines = ["\n## Strict hospital policy (real ClientApp and Federation over LoopbackGrid)\n",
             "Each hospital: `privacy.require: dp-sgd`, `max-epsilon-per-run` = the row's ε, `lifetime-epsilon` "
             "100, δ = 1e-6, `min-noise-multiplier` 0.5, split seed 43 / train fraction 0.66, no baselines, no "
             "tracking, `release.evaluation: dp` (z = 50, 10 bins per class) with `max-evaluations-per-run` 16 "
             "reserved in the training noise's calibration, a noisy row count (statistics z = 20) used for the "
             "sampling rate and the FedAvg weight; fresh state folder per run, fresh OS noise. Server: "
             "`privacy=dp-sgd privacy.epsilon=ε rounds=15 seed=s` (dp-sgd defaults) plus the row's overrides. "
             "Seeds 0, 1, 2 unless a row names others; mean ± sd. Accuracy/AUC measured on the true test rows from "
             "the final model (no DP); 'server saw' = the mean accuracy the server computed from the noisy "
             "evaluation replies; 'ε spent' = largest over hospitals from their ledgers, 'stats + evals' = the "
             "part of it the statistics and the 15 evaluations cost; z = mean calibrated DP-SGD noise multiplier, "
             "z / B = mean noise on the averaged gradient in units of the clipping norm (B = noisy rows x "
             "sampling rate; comparable across batch sizes); 'DP-SGD training' = what the server asked (batch B, "
             "local steps, lr, clipping norm C; 15 rounds), recorded with each row.\n",
             "| ε | server overrides (policy changes) | DP-SGD training | mean accuracy | mean AUC | pooled-test AUC "
             "| server saw acc. | ε spent | stats + evals ε | z | z / B | s / run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows.values():
        over = row.get("label") or "dp-sgd defaults, strict policy"
        over += f", seeds {', '.join(map(str, row['seeds']))}" if row.get("seeds", [0, 1, 2]) != [0, 1, 2] else ""
        lines.append(f"| {row['epsilon-target']:g} | {over} | {training_label(row['train'])} | "
                     f"{fmt(row['mean-accuracy'])} | {fmt(row['mean-auc'])} | "
                     f"{fmt(row['pooled-auc'])} | {fmt(row['server-mean-accuracy'])} | {fmt(row['epsilon'])} | "
                     f"{fmt(row['stats-evals-epsilon'])} | {fmt(row['noise-multiplier'], 2)} | "
                     f"{fmt(mean_sd_of([gradient_noise(r) for r in row['runs']]), 2)} | "
                     f"{fmt(row['seconds'], 0)} |")
    groups: dict[tuple[float, str], list[dict]] = {}
    for row in rows.values():
        groups.setdefault((row["epsilon-target"], row.get("label") or "dp-sgd defaults, strict policy"), []).append(row)
    if results.get("policy_provenance"):  # when and with which code the rows were measured
        lines.append("\n" + results["policy_provenance"])
    for (eps, label), same in groups.items():
        for row in same:  # a row over more seeds than 0, 1, 2: those three alone, as the other rows have them
            first = [r for s, r in zip(row.get("seeds", [0, 1, 2]), row["runs"], strict=True) if s in (0, 1, 2)]
            if len(first) == 3 and len(row["runs"]) > 3:
                lines.append(f"\nε = {eps:g}, {label}, seeds 0, 1, 2 of its {len(row['runs'])}: mean accuracy "
                             f"{fmt(mean_sd_of([r['mean-accuracy'] for r in first]))}, pooled-test AUC "
                             f"{fmt(mean_sd_of([r['pooled-auc'] for r in first]))}.")
        if len(same) > 1:  # the same setting over several seed sets: all its runs together
            runs = [r for row in same for r in row["runs"]]
            lines.append(f"\nAll {len(runs)} runs of ε = {eps:g}, {label}: mean accuracy "
                         f"{fmt(mean_sd_of([r['mean-accuracy'] for r in runs]))}, pooled-test AUC "
                         f"{fmt(mean_sd_of([r['pooled-auc'] for r in runs]))}.")
    lines.append("\n'server saw' only shows that the DP evaluation replies are noise at these test sizes (16-104 "
                 "rows, noise sd 50 per count); how the app derives accuracy from the noisy counts changed while these "
                 "rows ran (commit f558b46: from the unclipped sums), which affects this column only. s / run: a "
                 "shared 2-core machine under a load of up to 11; with batch 64 (z ≈ 46) most of a run is Opacus' RDP "
                 "accounting (fractional orders converge slowly at large z, and every epsilon query recomputes the "
                 "whole history).")
    costs = results.get("policy_noise", {})
    if costs:
        labels = [k for k in next(iter(costs.values())) if k != "rows"]
        lines += ["\nCalibrated DP-SGD noise multiplier at ε = 1 (dp-sgd defaults, exact row count; computed, "
                  "not run), from the no-policy accounting to the strict policy's:\n",
                  "| hospital | rows | " + " | ".join(labels) + " |", "|---|---" + "|---" * len(labels) + "|"]
        for name, row in costs.items():
            if "rows" in row:
                lines.append(f"| {name} | {row['rows']:.0f} | " + " | ".join(f"{row[k]:.2f}" for k in labels) + " |")
        alone = costs.get("alone at delta 1e-6") or {}
        if alone:
            lines.append("\nAlone, at δ = 1e-6: " + "; ".join(f"{k} ε = {v:.3f}" for k, v in alone.items()) + ".")
    return lines
