"""Site recalibration: ``fedheart recalibrate RUN_DIR LOCAL.csv --out DIR``.

A hospital that did not train the model refits the calibration intercept and slope on a small
labelled sample of its own (:func:`fedheart.calibration.firth_recalibration`: Firth's penalised slope
with the intercept refitted, FLIC, which neither overfits a sample with few events of one class nor
fails on one the model separates perfectly) and gets a new model folder: the same weights,
``final_model.json`` with a ``recalibration`` entry (``sigmoid(a + b * logit(p))``, composed with any
earlier one), and ``final_model.onnx`` with the recalibration in the graph. ``fedheart predict`` and
``fedheart export`` work on it. The source folder is never written to.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedheart.calibration import calibration_intercept, firth_recalibration
from fedheart.predict import ModelError, SavedModel, load_model, load_weights, read_patients
from fedheart.tables import DataFileError

METHOD = "FLIC: Firth-penalised slope, maximum-likelihood intercept (Puhr et al., Stat Med 2017)"


@dataclass(frozen=True)
class Recalibration:
    """The fit on the sample, and the (composed) recalibration the new folder applies."""

    fitted: tuple[float, float]  # (a, b) on this sample, for the source model's probabilities
    combined: tuple[float, float]  # applied to the uncalibrated logit: the source's own one composed
    rows: int
    events: int
    intercept_before: float  # calibration-in-the-large of the source model on the sample

    def to_dict(self, sample: Path, source: Path) -> dict[str, Any]:
        return {"intercept": self.combined[0], "slope": self.combined[1], "method": METHOD,
                "fitted-intercept": self.fitted[0], "fitted-slope": self.fitted[1],
                "rows": self.rows, "events": self.events, "calibration-intercept-before": self.intercept_before,
                "sample": str(sample), "sample-sha256": hashlib.sha256(sample.read_bytes()).hexdigest(),
                "source-model": str(source)}


def fit(model: SavedModel, sample: str | Path) -> Recalibration:
    """Fit the intercept and slope of ``model``'s probabilities on a labelled sample (validated as training)."""
    table = read_patients(sample, model, labelled=True)
    labels = table.labels
    p = model.probabilities(table.frame)
    a, b = firth_recalibration(labels, p)
    events = int(labels.sum())
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ModelError(f"{sample}: the intercept and slope cannot be fitted on these {len(labels)} rows "
                         f"({events} with disease, {len(labels) - events} without): "
                         + ("both classes are needed" if 0 in (events, len(labels) - events)
                            else "the penalised fit did not converge"))
    a0, b0 = model.recalibration or (0.0, 1.0)  # logit(p) = a0 + b0 * z, so a + b * logit(p) composes
    return Recalibration((a, b), (a + b * a0, b * b0), len(labels), events, calibration_intercept(labels, p))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def recalibrate(run_dir: str | Path, sample: str | Path, out: str | Path, *,
                standardise_from: str | Path | None = None) -> tuple[Recalibration, str]:
    """Write the recalibrated model folder ``out`` (which must be new or empty); the fit and the ONNX note."""
    source = Path(run_dir).expanduser().resolve()
    target = Path(out).expanduser().resolve()
    if _inside(target, source):
        raise ModelError(f"--out {out} is inside {run_dir}: the source model folder is never modified")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ModelError(f"--out {out} exists and is not an empty folder; choose a new one")
    model = load_model(source, standardise_from=standardise_from)
    result = fit(model, sample)
    meta = dict(model.meta)
    meta["recalibration"] = result.to_dict(Path(sample), source)
    meta["threshold"] = model.threshold  # the run's, kept: the folder has no summary.json
    if model.pipeline == "flamby":  # this hospital's standardisation, fitted above, travels with the model
        meta["preprocessing"] = model.preprocessor.to_dict()
        if standardise_from is not None:
            meta["standardisation-source"] = str(standardise_from)
    from fedheart.onnx_export import write_run_onnx
    from fedheart.runs import save_model_files

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the model from the user who serves it
    try:
        save_model_files(staging, load_weights(source), meta)
        note = write_run_onnx(staging).replace(str(staging), str(target))
        os.replace(staging, target)  # the whole folder appears at once
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result, note


def command(run_dir: str, sample: str, out: str, *, standardise_from: str | None = None) -> int:
    """``fedheart recalibrate``: exit 0, or 2 with the reason on stderr."""
    try:
        result, note = recalibrate(run_dir, sample, out, standardise_from=standardise_from)
    except (ModelError, DataFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    a, b = result.fitted
    print(f"fitted on {result.rows} rows ({result.events} with disease): intercept {a:.4f}, slope {b:.4f} "
          f"(the model's calibration intercept on this sample was {result.intercept_before:.4f})")
    if min(result.events, result.rows - result.events) < 50:
        print("note: fewer than 50 rows in one class; the slope is uncertain on a sample this small")
    print(f"wrote {out}: final_model.json, final_model.npz, final_model.pt; {note}")
    return 0
