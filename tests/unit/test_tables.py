"""Reading and validating hospital files: every problem names file, line and field."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fedheart.schema import COLUMNS, HOSPITALS
from fedheart.tables import DataFileError, read_table
from fedheart_cli.main import main as cli_main

GOOD = "63,1,1,145,233,1,2,150,0,2.3,3,0,6,0\n67,1,4,160,286,0,2,108,1,1.5,2,3,3,2\n"


def write(tmp_path: Path, text: str | bytes, name: str = "h.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("hospital", HOSPITALS, ids=lambda h: h.key)
def test_real_uci_files_read_without_problems(data_dir: Path, hospital) -> None:
    table = read_table(data_dir / hospital.filename)
    expected_rows = {"cleveland": 303, "hungarian": 294, "switzerland": 123, "va": 200}[hospital.key]
    assert len(table.frame) == expected_rows
    assert list(table.frame.columns) == list(COLUMNS)
    assert table.problems == []


def test_header_is_optional_and_question_mark_is_missing(tmp_path: Path) -> None:
    header = ",".join(COLUMNS) + "\n"
    with_header = read_table(write(tmp_path, header + GOOD.replace("233", "?")))
    assert with_header.has_header
    assert with_header.frame["chol"].isna().sum() == 1
    assert list(with_header.frame.index) == [2, 3]  # physical line numbers
    assert list(with_header.file_rows) == [0, 1]
    assert list(with_header.labels) == [0, 1]


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        ("63,1,1,145,233,1,2,150,0,2.3,3,0,6\n", 1, None, "expected 14"),
        (GOOD + "67,1,4,160,abc,0,2,108,1,1.5,2,3,3,2\n", 3, "chol", "not a number"),
        (GOOD + "150,1,4,160,200,0,2,108,1,1.5,2,3,3,2\n", 3, "age", "out of range"),
        (GOOD + "50,2,4,160,200,0,2,108,1,1.5,2,3,3,2\n", 3, "sex", "one of 0, 1"),
        (GOOD + "50,1,5,160,200,0,2,108,1,1.5,2,3,3,2\n", 3, "cp", "one of 1, 2, 3, 4"),
        (GOOD + "50,1,4,160,200,0,2,108,1,1.5,2,3,3,7\n", 3, "num", "one of 0, 1, 2, 3, 4"),
        (GOOD + "50,1,4,160,200,0,2,108,1,1.5,2,3,3,?\n", 3, "num", "required but missing"),
    ],
)
def test_bad_values_are_reported_with_line_and_field(tmp_path: Path, text: str, line: int, field, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataFileError) as err:
        read_table(path)
    problem = err.value.problems[0]
    assert (problem.path, problem.line, problem.field) == (str(path), line, field)
    assert words in problem.message
    assert f"line {line}" in str(err.value)


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"", "empty"), (b"\n\n  \n", "empty"), (b"\x00\x01\x02garbage", "binary"),
     ("63,1,1,145,233,1,2,150,0,2.3,3,0,6,0\n".encode("utf-16"), "UTF-16 text"),
     ("63,1,1,145,233,1,2,150,0,2.3,3,0,6,0\n".encode("utf-16-le"), "UTF-16 text"),  # no BOM
     ("63,1,1,145,233,1,2,150,0,2.3,3,0,6,0\n".encode("utf-32"), "UTF-32 text"),
     (b"63,1,1,145,233,1,2,150,0,2.3,3,0,6,0\n6\xe9,1,1,145,233,1,2,150,0,2.3,3,0,6,0\n", "UTF-8"),
     (b"1," * 5000 + b"\n", "characters long")],
)
def test_unreadable_files_get_one_clear_problem(tmp_path: Path, content: bytes, words: str) -> None:
    with pytest.raises(DataFileError) as err:
        read_table(write(tmp_path, content))
    assert words in str(err.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="no such file"):
        read_table(tmp_path / "absent.csv")


def test_validate_command_reports_and_never_modifies(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path, GOOD + "67,1,4,160,abc,0,2,108,1,1.5,2,3,3,2\n")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert cli_main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "Rows: 3" in out and "field 'chol'" in out and "NOT usable" in out
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_validate_command_accepts_a_good_file(data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["validate", str(data_dir / "processed.va.data")]) == 0
    out = capsys.readouterr().out
    assert "Rows: 200" in out and "149 positive" in out and "OK" in out
