"""A model folder (a run's output folder, or one written by ``fedheart recalibrate``), loaded for use.

It holds ``final_model.json`` (features, preprocessing, threshold, recalibration) and the weights
(``final_model.npz``; ``final_model.pt`` for runs older than the npz). :func:`load_model` reads and checks
them into a :class:`SavedModel`, whose forward pass is numpy in double precision (no torch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedheart.calibration import recalibrated
from fedheart.models import ModelSpecError, full_spec, resolve, saved_spec
from fedheart.preprocess import FLAMBY_COLUMNS, Preprocessor, flamby_preprocessor
from fedheart.specs import ModelSpec
from fedheart.stats import NUMERIC
from fedheart.tables import read_table

META = "final_model.json"
WEIGHTS = "final_model.npz"
TORCH_WEIGHTS = "final_model.pt"
SUMMARY = "summary.json"
DEFAULT_THRESHOLD = 0.5  # fedheart.metrics.accuracy's threshold



class ModelError(ValueError):
    """A model folder cannot be used as asked; the message says why and what to do."""


class NeedsStandardisation(ModelError):
    """A protocol=flamby model without a hospital's standardisation (``--standardise-from``)."""


def model_meta(spec: ModelSpec, pre: Preprocessor, *, preprocessing: Any = None, **extra: Any) -> dict[str, Any]:
    """A model folder's ``final_model.json``: the model, its features and preprocessing (``preprocessing``:
    what to save instead of ``pre``'s numbers), and ``extra`` fields (rounds, strategy, ...)."""
    return {"model": spec.name, "model_settings": full_spec(spec).to_dict(), "pipeline": pre.pipeline,
            "features": pre.feature_names, "preprocessing": pre.to_dict() if preprocessing is None else preprocessing,
            **extra}


def sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def _layer_names(meta: dict[str, Any], where: str) -> list[str]:
    """The state-dict prefixes of the saved model's linear layers, in order (fedheart.models)."""
    try:
        kind, params = resolve(saved_spec(meta.get("model_settings") or str(meta.get("model", "logreg"))))
    except ModelSpecError as exc:
        raise ModelError(f"{where}: {exc}") from None
    return kind.linear_layers(params)


def load_weights(folder: Path) -> dict[str, np.ndarray]:
    if (folder / WEIGHTS).is_file():
        with np.load(folder / WEIGHTS, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    if (folder / TORCH_WEIGHTS).is_file():
        import torch  # an older run folder without the numpy copy of the weights

        state = torch.load(folder / TORCH_WEIGHTS, map_location="cpu", weights_only=True)
        return {k: v.numpy() for k, v in state.items()}
    raise ModelError(f"{folder}: no {WEIGHTS} or {TORCH_WEIGHTS} (is this a finished run's folder?)")


@dataclass
class SavedModel:
    """A model folder's contents: the preprocessing, the linear layers, the recalibration."""

    folder: Path
    meta: dict[str, Any]
    preprocessor: Preprocessor
    layers: list[tuple[np.ndarray, np.ndarray]]  # (weight [out, in], bias [out]); ReLU between them
    recalibration: tuple[float, float] | None  # (intercept a, slope b): sigmoid(a + b * logit(p))
    threshold: float

    @property
    def pipeline(self) -> str:
        return self.preprocessor.pipeline

    def logits(self, features: np.ndarray) -> np.ndarray:
        """The model's logit per row (double precision; Dropout is the identity at inference)."""
        h = np.asarray(features, dtype=np.float64)
        for i, (weight, bias) in enumerate(self.layers):
            h = h @ weight.T.astype(np.float64) + bias.astype(np.float64)
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0]

    def probabilities(self, frame: pd.DataFrame) -> np.ndarray:
        """P(disease) per row of a validated table (recalibrated where the folder says so)."""
        p = sigmoid(self.logits(self.preprocessor.transform(frame)))
        return p if self.recalibration is None else recalibrated(p, *self.recalibration)


def flamby_standardisation(path: str | Path) -> Preprocessor:
    """FLamby's per-hospital standardisation fitted on the complete rows of a hospital's own file."""
    table = read_table(path, label_optional=True)
    complete = table.frame[list(FLAMBY_COLUMNS)].notna().all(axis=1).to_numpy()
    rows = table.frame[complete]
    if len(rows) < 2:
        raise ModelError(f"{path}: {len(rows)} complete row(s); the FLamby standardisation needs at least 2 rows "
                         f"with every one of {', '.join(FLAMBY_COLUMNS)}")
    return flamby_preprocessor(rows)


def _in_feature_order(pre: Preprocessor, where: str) -> Preprocessor:
    """The saved JSON has its keys sorted: put the one-hot blocks back in the order of ``feature_names``
    (the order :meth:`Preprocessor.transform` must produce), and check that this order is consistent."""
    if pre.pipeline != "project":
        return pre
    position = {name: i for i, name in enumerate(pre.feature_names)}
    order = sorted(pre.categories, key=lambda col: min((position.get(f"{col}={c}", len(position))
                                                        for c in pre.categories[col]), default=len(position)))
    pre.categories = {col: pre.categories[col] for col in order}
    implied = [*NUMERIC, *(f"{col}={c}" for col, cats in pre.categories.items() for c in cats),
               *(f"{col}_missing" for col in pre.indicators)]
    if implied != pre.feature_names:
        raise ModelError(f"{where}: the saved preprocessing's features {implied} do not match its feature_names "
                         f"{pre.feature_names}")
    return pre


def _preprocessor(folder: Path, meta: dict[str, Any], standardise_from: str | Path | None) -> Preprocessor:
    saved = meta.get("preprocessing")
    pipeline = meta.get("pipeline", "project")
    fitted = isinstance(saved, dict) and bool(saved.get("mean"))
    if pipeline == "flamby" and not fitted:
        if standardise_from is None:
            raise NeedsStandardisation(
                f"{folder}: this model was trained with protocol=flamby, where every hospital standardises its "
                "rows with its own training mean and standard deviation; the server never receives them, so "
                "the run folder cannot hold them. Pass --standardise-from YOUR_ROWS.csv (your hospital's own "
                "rows, e.g. its training file) to fit that standardisation, as FLamby does")
        pre = flamby_standardisation(standardise_from)
    elif standardise_from is not None:
        raise ModelError(f"{folder}: --standardise-from applies only to a protocol=flamby model that has no "
                         f"standardisation yet; this one ({pipeline} pipeline) carries its own")
    elif not fitted:
        raise ModelError(f"{folder}/{META}: no preprocessing statistics (field 'preprocessing')")
    else:
        try:
            pre = _in_feature_order(Preprocessor.from_dict(saved), f"{folder}/{META}")
        except (TypeError, KeyError) as exc:
            raise ModelError(f"{folder}/{META}: the saved preprocessing is not readable ({exc})") from None
    features = meta.get("features")
    if features is not None and list(features) != pre.feature_names:
        raise ModelError(f"{folder}/{META}: 'features' and the preprocessing's feature names differ")
    return pre


def load_model(folder: str | Path, *, standardise_from: str | Path | None = None) -> SavedModel:
    """Read a model folder; ``standardise_from``: a protocol=flamby model's hospital rows (see above)."""
    folder = Path(folder).expanduser()
    if not (folder / META).is_file():
        raise ModelError(f"{folder}: no {META}; pass a finished run's output folder (or a recalibrated model's)")
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder}/{META} is not readable JSON ({exc})") from None
    pre = _preprocessor(folder, meta, standardise_from)
    weights = load_weights(folder)
    names = _layer_names(meta, f"{folder}/{META}")
    expected = {f"{n}.{part}" for n in names for part in ("weight", "bias")}
    if set(weights) != expected:
        raise ModelError(f"{folder}: the weights {sorted(weights)} are not those of a {meta.get('model')} model "
                         f"({sorted(expected)})")
    layers = [(weights[f"{n}.weight"], weights[f"{n}.bias"]) for n in names]
    width = pre.num_features
    for n, (w, b) in zip(names, layers, strict=True):
        if w.ndim != 2 or w.shape[1] != width or b.shape != (w.shape[0],):
            raise ModelError(f"{folder}: layer {n} has shape {w.shape}, expected [*, {width}]")
        width = w.shape[0]
    if width != 1:
        raise ModelError(f"{folder}: the model's last layer has {width} outputs, expected 1 (a logit)")
    recal = meta.get("recalibration")
    recalibration = (float(recal["intercept"]), float(recal["slope"])) if recal else None
    return SavedModel(folder, meta, pre, layers, recalibration, run_threshold(folder, meta))


def run_threshold(folder: Path, meta: dict[str, Any]) -> float:
    """The threshold the run reported at: the model's own, else its summary's, else 0.5."""
    if "threshold" in meta:
        return float(meta["threshold"])
    try:
        return float(json.loads((folder / SUMMARY).read_text(encoding="utf-8"))["threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_THRESHOLD
