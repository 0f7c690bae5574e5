"""`fedheart predict`: a run's model applied to a patient file, from the run folder alone."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedheart.predict import load_model, predict_file
from fedheart.preprocess import flamby_complete, flamby_preprocessor
from fedheart.specs import ModelSpec
from fedheart.tables import DataFileError
from fedheart_cli.main import main
from tests.unit.model_folders import (
    MLP,
    flamby_run,
    global_preprocessor,
    project_run,
    torch_probabilities,
    uci_tables,
)


@pytest.fixture(scope="module")
def tables(data_dir: Path) -> list:
    return uci_tables(data_dir)


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory: pytest.TempPathFactory, tables) -> Path:
    return project_run(tmp_path_factory.mktemp("mlp"), tables, MLP)


@pytest.fixture(scope="module")
def flamby_dir(tmp_path_factory: pytest.TempPathFactory, tables) -> Path:
    return flamby_run(tmp_path_factory.mktemp("flamby"), tables)


def source_lines(data_dir: Path, name: str = "processed.hungarian.data") -> list[str]:
    return (data_dir / name).read_text().splitlines()


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def parse(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_every_row_in_the_files_order_with_its_line_number(tmp_path: Path, data_dir: Path, mlp_run: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    rows = source_lines(data_dir)[:40]
    order = np.random.default_rng(1).permutation(len(rows))
    body = [",".join(rows[i].split(",")[:13]) for i in order]  # no label column
    lines = ["age,sex,cp,trestbps,chol,fbs,restecg,thalach,exang,oldpeak,slope,ca,thal", *body[:20], "", *body[20:]]
    patients = tmp_path / "patients.csv"
    patients.write_text("\n".join(lines) + "\n")
    code, out, err = cli(capsys, "predict", mlp_run, patients)
    assert code == 0, err
    got = parse(out)
    assert [int(r["line"]) for r in got] == [*range(2, 22), *range(23, 43)]  # blank line 22 is not a row
    # The expected values come the training code's way: fedheart.model + torch on the same features.
    frame = uci_tables(data_dir)[1].frame.iloc[order]
    want = torch_probabilities(mlp_run, MLP, global_preprocessor(uci_tables(data_dir)).transform(frame))
    probability = np.array([float(r["probability"]) for r in got])
    assert np.max(np.abs(probability - want)) < 1e-6
    assert [int(r["prediction"]) for r in got] == (probability >= 0.5).astype(int).tolist()


def test_header_and_label_are_optional(tmp_path: Path, data_dir: Path, mlp_run: Path) -> None:
    rows = source_lines(data_dir)[:25]
    header = "age,sex,cp,trestbps,chol,fbs,restecg,thalach,exang,oldpeak,slope,ca,thal"
    variants = {
        "plain": rows,
        "header": [f"{header},num", *rows],
        "no-label": [",".join(r.split(",")[:13]) for r in rows],
        "no-label-header": [header, *(",".join(r.split(",")[:13]) for r in rows)],
        "unknown-label": [",".join([*r.split(",")[:13], "?"]) for r in rows],
    }
    results = {}
    for name, lines in variants.items():
        path = tmp_path / f"{name}.csv"
        path.write_text("\n".join(lines) + "\n")
        results[name] = predict_file(mlp_run, path)
    reference = results["plain"].probability
    for name, result in results.items():
        assert np.array_equal(result.probability, reference), name
        offset = 2 if "header" in name else 1
        assert result.lines.tolist() == list(range(offset, offset + len(rows))), name


@pytest.mark.parametrize(("line", "edit", "where"), [
    (3, lambda c: c.__setitem__(2, "5"), "line 3, field 'cp'"),
    (5, lambda c: c.__setitem__(0, "?"), "line 5, field 'age'"),
    (4, lambda c: c.__setitem__(4, "high"), "line 4, field 'chol'"),
    (6, lambda c: c.pop(), "line 6: expected 14 comma-separated fields"),
])
def test_a_bad_row_is_refused_by_file_line_and_field(tmp_path: Path, data_dir: Path, mlp_run: Path,
                                                     capsys: pytest.CaptureFixture, line, edit, where) -> None:
    rows = [r.split(",") for r in source_lines(data_dir)[:8]]
    edit(rows[line - 1])
    patients = tmp_path / "bad.csv"
    patients.write_text("".join(",".join(r) + "\n" for r in rows))
    out = tmp_path / "scores.csv"
    code, _, err = cli(capsys, "predict", mlp_run, patients, "--out", out)
    assert code == 2
    assert f"{patients}, {where}" in err
    assert not out.exists()  # nothing written: no row is silently dropped


def test_same_output_every_time_and_the_inputs_are_only_read(tmp_path: Path, data_dir: Path, mlp_run: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    patients = tmp_path / "p.csv"
    patients.write_text("\n".join(source_lines(data_dir, "processed.va.data")) + "\n")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in [patients, *mlp_run.iterdir()]}
    outputs = []
    for i in range(2):
        code, _, err = cli(capsys, "predict", mlp_run, patients, "--out", tmp_path / f"out{i}.csv")
        assert code == 0, err
        outputs.append((tmp_path / f"out{i}.csv").read_bytes())
    assert outputs[0] == outputs[1] and len(parse(outputs[0].decode())) == 200
    code, _, err = cli(capsys, "predict", mlp_run, patients, "--out", patients)
    assert code == 2 and "input files are only read" in err
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before} == before


def test_threshold_defaults_to_the_runs_and_can_be_given(tmp_path: Path, data_dir: Path, mlp_run: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for f in mlp_run.iterdir():
        (run / f.name).write_bytes(f.read_bytes())
    (run / "summary.json").write_text(json.dumps({"threshold": 0.7}))
    patients = data_dir / "processed.cleveland.data"
    code, out, _ = cli(capsys, "predict", run, patients, "--json")
    data = json.loads(out)
    assert code == 0 and data["threshold"] == 0.7
    assert [r["prediction"] for r in data["rows"]] == [int(r["probability"] >= 0.7) for r in data["rows"]]
    assert 0 < sum(r["prediction"] for r in data["rows"]) < sum(r["probability"] >= 0.5 for r in data["rows"])
    code, out, _ = cli(capsys, "predict", run, patients, "--threshold", "0.2")
    rows = parse(out)
    assert code == 0 and [int(r["prediction"]) for r in rows] == [int(float(r["probability"]) >= 0.2) for r in rows]
    code, _, err = cli(capsys, "predict", run, patients, "--threshold", "1.5")
    assert code == 2 and "between 0 and 1" in err


def test_flamby_model_needs_the_hospitals_own_standardisation(tmp_path: Path, data_dir: Path, flamby_dir: Path,
                                                              tables, capsys: pytest.CaptureFixture) -> None:
    patients = data_dir / "processed.cleveland.data"
    code, _, err = cli(capsys, "predict", flamby_dir, patients)
    assert code == 2 and "protocol=flamby" in err and "--standardise-from" in err
    # Cleveland's complete rows: FLamby's own standardisation of that hospital, applied the training way.
    complete = tmp_path / "complete.csv"
    rows = source_lines(data_dir, "processed.cleveland.data")
    keep = flamby_complete(tables[0].frame)
    complete.write_text("".join(f"{r}\n" for r, k in zip(rows, keep, strict=True) if k))
    result = predict_file(flamby_dir, complete, standardise_from=patients)
    frame = tables[0].frame[keep]
    want = torch_probabilities(flamby_dir, ModelSpec(), flamby_preprocessor(frame).transform(frame))
    assert result.lines.tolist() == list(range(1, int(keep.sum()) + 1))
    assert np.max(np.abs(result.probability - want)) < 1e-6
    # An incomplete row cannot be scored by FLamby's pipeline: refused by line and field, not dropped.
    hungarian = data_dir / "processed.hungarian.data"
    with pytest.raises(DataFileError) as info:
        predict_file(flamby_dir, hungarian, standardise_from=patients)
    missing = ~flamby_complete(tables[1].frame)
    first = int(tables[1].frame.index[missing][0])
    assert f"line {first}, field" in str(info.value) and "complete rows only" in str(info.value)
    assert len(info.value.problems) >= int(missing.sum())
    code, _, err = cli(capsys, "predict", flamby_dir, patients, "--standardise-from", tmp_path / "absent.csv")
    assert code == 2 and "absent.csv: no such file" in err


def test_standardise_from_is_refused_for_a_project_model(mlp_run: Path, data_dir: Path) -> None:
    with pytest.raises(ValueError, match="only to a protocol=flamby model"):
        load_model(mlp_run, standardise_from=data_dir / "processed.va.data")


def test_a_folder_without_a_model_is_explained(tmp_path: Path, data_dir: Path, capsys) -> None:
    code, _, err = cli(capsys, "predict", tmp_path, data_dir / "processed.va.data")
    assert code == 2 and "no final_model.json" in err


def test_the_command_needs_no_torch(tmp_path: Path, data_dir: Path, mlp_run: Path) -> None:
    """Importing torch alone takes about 1.5 s here; the numpy weights keep predict well under it."""
    code = ("import sys; from fedheart_cli.main import main; code = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(code)")
    out = tmp_path / "o.csv"
    done = subprocess.run([sys.executable, "-c", code, "predict", str(mlp_run), str(data_dir / "processed.va.data"),
                           "--out", str(out)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.returncode == 0, done.stderr
    assert len(parse(out.read_text())) == 200
