"""final_model.onnx: the whole pipeline as one ONNX graph, run with ONNX Runtime against `fedheart predict`."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest

from fedheart.onnx_export import ONNX_FILE, export_onnx, write_run_onnx
from fedheart.predict import ModelError, predict_file
from fedheart.preprocess import flamby_complete
from fedheart.schema import FEATURES, HOSPITALS
from fedheart.tables import DataFileError
from fedheart_cli.main import main
from tests.unit.model_folders import LOGREG, MLP, features_matrix, flamby_run, project_run, uci_tables


@pytest.fixture(scope="module")
def tables(data_dir: Path) -> list:
    return uci_tables(data_dir)


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(["probability"], {"features": x})
    return out


@pytest.mark.parametrize("spec", [LOGREG, MLP], ids=["logreg", "mlp"])
def test_onnx_equals_predict_on_all_920_uci_rows(tmp_path: Path, data_dir: Path, tables, spec) -> None:
    run = project_run(tmp_path / "run", tables, spec)
    assert write_run_onnx(run).startswith("wrote") and (run / ONNX_FILE).is_file()
    expected = np.concatenate([predict_file(run, data_dir / h.filename).probability for h in HOSPITALS])
    got = run_onnx(run / ONNX_FILE, features_matrix(pd.concat([t.frame for t in tables])))
    assert got.shape == (920,) and np.isfinite(got).all()
    assert np.max(np.abs(got.astype(np.float64) - expected)) <= 1e-6
    assert np.std(expected) > 0.1  # a trained model, not a constant


def test_rows_predict_refuses_come_out_as_nan_and_zeros_count_as_missing(tmp_path: Path, tables) -> None:
    run = project_run(tmp_path / "run", tables)
    path = export_onnx(run)
    row = tables[0].frame.iloc[0][list(FEATURES)].to_numpy(dtype=np.float32)
    cases = {"valid": row.copy()}
    for name, field, value in [("cp=5", "cp", 5), ("age missing", "age", np.nan), ("chol=2000", "chol", 2000),
                               ("thal=4", "thal", 4)]:
        cases[name] = row.copy()
        cases[name][FEATURES.index(field)] = value
    out = run_onnx(path, np.stack(list(cases.values())))
    assert np.isfinite(out[0]) and np.isnan(out[1:]).all(), dict(zip(cases, out, strict=True))
    # chol = 0 is "not measured" (an impossible zero) and must score as a missing chol does.
    zero, missing = row.copy(), row.copy()
    zero[FEATURES.index("chol")], missing[FEATURES.index("chol")] = 0, np.nan
    a, b = run_onnx(path, np.stack([zero, missing]))
    assert a == b and a != out[0]


def test_the_graph_says_what_it_takes(tmp_path: Path, tables) -> None:
    model = onnx.load(str(export_onnx(project_run(tmp_path / "run", tables))))
    (inp,) = model.graph.input
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "features" and dims == ["N", 13] and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    props = {p.key: p.value for p in model.metadata_props}
    assert props["input"].startswith("features: float32 [N, 13] = age, sex, cp") and props["threshold"] == "0.5"


def test_flamby_run_writes_no_onnx_but_a_hospital_can(tmp_path: Path, data_dir: Path, tables,
                                                      capsys: pytest.CaptureFixture) -> None:
    run = flamby_run(tmp_path / "run", tables)
    note = write_run_onnx(run)
    assert "not written" in note and f"fedheart export {run} --standardise-from" in note
    assert not (run / ONNX_FILE).exists()
    own = data_dir / "processed.hungarian.data"
    with pytest.raises(ModelError, match="--out"):
        export_onnx(run, standardise_from=own)
    out = tmp_path / "hungarian.onnx"
    assert main(["export", str(run), "--standardise-from", str(own), "--out", str(out)]) == 0
    assert not (run / ONNX_FILE).exists()
    frame = tables[1].frame
    got = run_onnx(out, features_matrix(frame))
    keep = flamby_complete(frame)
    complete = tmp_path / "complete.csv"
    lines = own.read_text().splitlines()
    complete.write_text("".join(f"{r}\n" for r, k in zip(lines, keep, strict=True) if k))
    expected = predict_file(run, complete, standardise_from=own).probability
    assert np.max(np.abs(got[keep] - expected)) <= 1e-6
    assert np.isnan(got[~keep]).all() and (~keep).sum() > 0  # FLamby cannot score an incomplete row


def test_a_field_constant_in_the_flamby_standardisation_refuses_other_values(tmp_path: Path, data_dir: Path,
                                                                             tables) -> None:
    """Switzerland recorded chol as 0 (not measured) for every patient: FLamby standardises it to 0, and
    a patient with a measured chol cannot be standardised with that hospital's statistics."""
    run = flamby_run(tmp_path / "run", tables)
    own = data_dir / "processed.switzerland.data"
    keep = flamby_complete(tables[2].frame)
    lines = [r for r, k in zip(own.read_text().splitlines(), keep, strict=True) if k]
    cells = lines[3].split(",")
    cells[4] = "230"  # chol measured
    patients = tmp_path / "p.csv"
    patients.write_text("".join(f"{r}\n" for r in [*lines[:3], ",".join(cells)]))
    with pytest.raises(DataFileError, match=r"line 4, field 'chol': the FLamby standardisation saw chol = 0"):
        predict_file(run, patients, standardise_from=own)
    out = export_onnx(run, tmp_path / "ch.onnx", standardise_from=own)
    frame = tables[2].frame[keep].iloc[:4].copy()
    frame.iloc[3, frame.columns.get_loc("chol")] = 230
    got = run_onnx(out, features_matrix(frame))
    assert np.isfinite(got[:3]).all() and np.isnan(got[3])
    patients.write_text("".join(f"{r}\n" for r in lines[:3]))
    assert np.max(np.abs(predict_file(run, patients, standardise_from=own).probability - got[:3])) <= 1e-6


def test_without_the_export_libraries_a_run_still_says_how(tmp_path: Path, tables, monkeypatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    run = project_run(tmp_path / "run", tables)
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    note = write_run_onnx(run)
    assert "pip install 'fedheart[export]'" in note and f"fedheart export {run}" in note
    assert not (run / ONNX_FILE).exists()
    assert main(["export", str(run)]) == 2 and "fedheart[export]" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(["export", str(run)]) == 0 and (run / ONNX_FILE).is_file()
