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

from fedheart.preprocess import FLAMBY_COLUMNS, Preprocessor
from fedheart.saved_model import (
    DEFAULT_THRESHOLD,
    META,
    SUMMARY,
    TORCH_WEIGHTS,
    WEIGHTS,
    ModelError,
    NeedsStandardisation,
    SavedModel,
    flamby_standardisation,
    load_model,
    load_weights,
    run_threshold,
    sigmoid,
)
from fedheart.schema import COLUMNS
from fedheart.tables import DataFileError, HospitalTable, Problem, read_table

__all__ = ["DEFAULT_THRESHOLD", "META", "SUMMARY", "TORCH_WEIGHTS", "WEIGHTS", "ModelError", "NeedsStandardisation",
           "Predictions", "SavedModel", "command", "flamby_standardisation", "load_model", "load_weights",
           "predict_file", "predict_table", "read_patients", "run_threshold", "sigmoid", "write_output"]


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
