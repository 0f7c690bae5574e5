"""Model folders as a finished run leaves them, built from the core functions (no Flower).

The metadata mirrors ``server_app.federation.Federation.finish``; the project preprocessing goes
through the JSON round trip the server's statistics take (``GlobalStats.to_json``/``from_json``).
A model is trained once per process and configuration, then saved into every folder asked for.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fedheart import stats as fstats
from fedheart.model import build_model, get_weights, set_weights
from fedheart.preprocess import Preprocessor, flamby_complete, flamby_preprocessor, project_preprocessor
from fedheart.runs import RunDir
from fedheart.schema import FEATURES, HOSPITALS
from fedheart.specs import ModelSpec, TrainConfig
from fedheart.tables import HospitalTable, read_table
from fedheart.training import TensorBatches, predict, train

FLAMBY_SENTENCE = "per-hospital standardisation (FLamby): each hospital uses its own training mean/std"


def uci_tables(data_dir: Path) -> list[HospitalTable]:
    return [read_table(data_dir / h.filename) for h in HOSPITALS]


def global_preprocessor(tables: list[HospitalTable]) -> Preprocessor:
    totals = fstats.combine(fstats.local_stats(t.frame) for t in tables)
    return project_preprocessor(fstats.GlobalStats.from_json(fstats.GlobalStats.from_totals(totals).to_json()))


def _fit(spec: ModelSpec, x: np.ndarray, y: np.ndarray, steps: int) -> torch.nn.Module:
    model = build_model(spec, x.shape[1])
    train(model, TensorBatches(x, y, 32, seed=0), TrainConfig(lr=0.05), steps)
    return model


def _save(folder: Path, model: torch.nn.Module, spec: ModelSpec, pipeline: str, pre: Preprocessor,
          preprocessing: dict | str) -> Path:
    RunDir(folder).save_final_model(get_weights(model), {
        "model": spec.name, "model_settings": spec.to_dict(), "pipeline": pipeline, "features": pre.feature_names,
        "preprocessing": preprocessing, "rounds": 1, "strategy": "fedavg"})
    return folder


LOGREG = ModelSpec()
MLP = ModelSpec("mlp", {"hidden": 16, "layers": 2, "dropout": 0.1})


def project_run(folder: Path, tables: list[HospitalTable], spec: ModelSpec = LOGREG, *, steps: int = 200,
                scale: float = 1.0, shift: float = 0.0) -> Path:
    """A model trained on all four hospitals' rows; ``scale``/``shift`` of the last layer miscalibrate it."""
    model, pre = _project_model(tuple(t.path for t in tables), spec, steps, scale, shift)
    return _save(folder, model, spec, "project", pre, pre.to_dict())


@functools.lru_cache(maxsize=8)
def _project_model(paths: tuple[str, ...], spec: ModelSpec, steps: int, scale: float,
                   shift: float) -> tuple[torch.nn.Module, Preprocessor]:
    tables = [read_table(p) for p in paths]
    pre = global_preprocessor(tables)
    frame = pd.concat([t.frame for t in tables])
    model = _fit(spec, pre.transform(frame), np.concatenate([t.labels for t in tables]), steps)
    weights = get_weights(model)
    last = sorted(k for k in weights if k.endswith(".weight"))[-1]
    weights[last] = weights[last] * scale
    weights[last.replace("weight", "bias")] = weights[last.replace("weight", "bias")] * scale + shift
    set_weights(model, weights)
    return model, pre


def flamby_run(folder: Path, tables: list[HospitalTable], spec: ModelSpec = LOGREG, *,
               steps: int = 200) -> Path:
    """FLamby's pipeline: each hospital standardises its own complete rows; the folder holds no statistics."""
    model = _flamby_model(tuple(t.path for t in tables), spec, steps)
    return _save(folder, model, spec, "flamby", flamby_preprocessor(tables[0].frame[:2]), FLAMBY_SENTENCE)


@functools.lru_cache(maxsize=4)
def _flamby_model(paths: tuple[str, ...], spec: ModelSpec, steps: int) -> torch.nn.Module:
    xs, ys = [], []
    tables = [read_table(p) for p in paths]
    for t in tables:
        keep = flamby_complete(t.frame)
        xs.append(flamby_preprocessor(t.frame[keep]).transform(t.frame[keep]))
        ys.append(t.labels[keep])
    return _fit(spec, np.concatenate(xs), np.concatenate(ys), steps)


def torch_probabilities(folder: Path, spec: ModelSpec, x: np.ndarray) -> np.ndarray:
    """The training code's way: final_model.pt into fedheart.model, fedheart.training.predict."""
    model = build_model(spec, x.shape[1])
    state = torch.load(folder / "final_model.pt", weights_only=True)
    set_weights(model, {k: v.numpy() for k, v in state.items()})
    return predict(model, x).astype(np.float64)


def features_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The ONNX input: the 13 fields as float32, NaN for missing."""
    return frame[list(FEATURES)].to_numpy(dtype=np.float32)


def write_rows(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path
