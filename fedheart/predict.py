"""Apply a saved model to a patient file: ``fedheart predict RUN_DIR PATIENTS.csv``.

A model folder (a run's output folder, or one written by ``fedheart recalibrate``) holds
``final_model.json`` (features, preprocessing, threshold, recalibration) and the weights
(``final_model.npz``; ``final_model.pt`` for runs older than the npz). Everything needed to score a
patient comes from these files; no training data is read, and nothing here imports torch.

The forward pass is computed in double precision from the float32 features the model was trained
on; :mod:`fedheart.onnx_export` builds the same computation as one ONNX graph.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedheart.calibration import recalibrated
from fedheart.preprocess import FLAMBY_COLUMNS, Preprocessor, flamby_preprocessor
from fedheart.schema import COLUMNS
from fedheart.stats import NUMERIC
from fedheart.tables import DataFileError, HospitalTable, Problem, read_table

META = "final_model.json"
WEIGHTS = "final_model.npz"
TORCH_WEIGHTS = "final_model.pt"
SUMMARY = "summary.json"
DEFAULT_THRESHOLD = 0.5  # fedheart.metrics.accuracy's threshold


class ModelError(ValueError):
    """A model folder cannot be used as asked; the message says why and what to do."""


class NeedsStandardisation(ModelError):
    """A protocol=flamby model without a hospital's standardisation (``--standardise-from``)."""


def sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def _layer_names(model: str, settings: dict[str, Any]) -> list[str]:
    """The state-dict prefixes of the model's linear layers (fedheart.model), in order."""
    if model == "logreg":
        return ["linear"]
    if model == "mlp":
        layers = int(settings.get("layers", 1))
        return [f"net.{3 * i}" for i in range(layers + 1)]  # blocks of Linear, ReLU, Dropout, then Linear
    raise ModelError(f"unknown model {model!r} (known: logreg, mlp)")


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


def _flamby_constants(pre: Preprocessor, table: HospitalTable) -> list[Problem]:
    """Rows whose value differs from a field FLamby's standardisation saw as constant (std 0: it divides by
    1e-9, so any other value would be standardised to about 1e9): refused by line and field."""
    constant = [i for i, f in enumerate(pre.feature_names) if pre.std[f] == 0]
    if not constant:
        return []
    raw = pre._flamby_raw(table.frame.fillna(0.0))
    complete = table.frame[list(FLAMBY_COLUMNS)].notna().all(axis=1).to_numpy()  # the others are refused already
    problems = []
    for i in constant:
        name = pre.feature_names[i]
        for line in table.frame.index[complete & (raw[:, i] != pre.mean[name])]:
            problems.append(Problem(table.path, int(line), name.split("=")[0],
                                    f"the FLamby standardisation saw {name} = {pre.mean[name]:g} in every row it "
                                    "was fitted on; another value cannot be standardised (fit it on rows that vary)"))
    return problems


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
    names = _layer_names(str(meta.get("model", "logreg")), dict(meta.get("model_settings") or {}))
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


def read_patients(path: str | Path, model: SavedModel, *, labelled: bool = False) -> HospitalTable:
    """Validate a patient file as training does (the label optional unless ``labelled``); every bad row
    is named."""
    table = read_table(path, strict=False, label_optional=not labelled)
    problems = list(table.problems)
    if model.pipeline == "flamby":  # FLamby scores complete rows only: refuse the others by name
        for col in FLAMBY_COLUMNS:
            for line in table.frame.index[table.frame[col].isna()]:
                if not any(p.line == line and p.field == col for p in problems):
                    problems.append(Problem(table.path, int(line), col,
                                            "missing: a protocol=flamby model scores complete rows only "
                                            f"({', '.join(FLAMBY_COLUMNS)})"))
        problems += _flamby_constants(model.preprocessor, table)
        problems.sort(key=lambda p: (p.line or 0, COLUMNS.index(p.field) if p.field else -1))
    if problems:
        raise DataFileError(problems)
    return table


@dataclass(frozen=True)
class Predictions:
    """One row per input row, in the file's order."""

    lines: np.ndarray
    probability: np.ndarray
    threshold: float

    @property
    def prediction(self) -> np.ndarray:
        return (self.probability >= self.threshold).astype(np.int64)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["line", "probability", "prediction"])
        writer.writerows(zip(self.lines.tolist(), map(repr, self.probability.tolist()), self.prediction.tolist(),
                             strict=True))
        return out.getvalue()

    def to_json(self, source: dict[str, Any]) -> str:
        rows = [{"line": ln, "probability": p, "prediction": c}
                for ln, p, c in zip(self.lines.tolist(), self.probability.tolist(), self.prediction.tolist(),
                                    strict=True)]
        return json.dumps({**source, "threshold": self.threshold, "rows": rows}, indent=1) + "\n"


def predict_table(model: SavedModel, table: HospitalTable, threshold: float | None = None) -> Predictions:
    t = model.threshold if threshold is None else float(threshold)
    if not 0.0 <= t <= 1.0:
        raise ModelError(f"--threshold must be between 0 and 1, got {t}")
    return Predictions(table.frame.index.to_numpy(dtype=np.int64), model.probabilities(table.frame), t)


def predict_file(folder: str | Path, path: str | Path, *, threshold: float | None = None,
                 standardise_from: str | Path | None = None) -> Predictions:
    """Score every row of ``path`` with the model in ``folder`` (files are only read)."""
    model = load_model(folder, standardise_from=standardise_from)
    return predict_table(model, read_patients(path, model), threshold)


def write_output(text: str, out: str | Path | None, inputs: list[str | Path]) -> None:
    """Print ``text``, or write it to ``out`` (write, fsync, rename); never over one of the inputs."""
    if out is None:
        print(text, end="")
        return
    target = Path(out).expanduser()
    if any(Path(p).exists() and target.exists() and target.samefile(p) for p in inputs):
        raise ModelError(f"--out {out} is one of the input files; input files are only read")
    from fedheart.runs import atomic_write_bytes

    atomic_write_bytes(target, text.encode())


def command(run_dir: str, patients: str, *, out: str | None = None, threshold: float | None = None,
            as_json: bool = False, standardise_from: str | None = None) -> int:
    """``fedheart predict``: exit 0, or 2 with the reason on stderr (bad rows named by file, line, field)."""
    import sys

    try:
        result = predict_file(run_dir, patients, threshold=threshold, standardise_from=standardise_from)
        text = (result.to_json({"model": str(Path(run_dir)), "patients": str(patients)}) if as_json
                else result.to_csv())
        write_output(text, out, [patients, *([standardise_from] if standardise_from else [])])
    except (ModelError, DataFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
