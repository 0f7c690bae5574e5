"""Error text that may leave a hospital: the kind of problem, the field and a count, never a data value."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedheart.privacy.ledger import BudgetError
from fedheart.safeguard.policy import PolicyError, Refused
from fedheart.safeguard.scrub import HospitalFailure, data_error_summary, safe_reason
from fedheart.tables import DataFileError, read_table

GOOD = "63,1,1,145,233,1,2,150,0,2.3,3,0,6,0"
SECRETS = ("987654", "XYZ123", "918273")


def hospital_file(tmp_path: Path) -> Path:
    """Five rows: cholesterol 987654 (out of range) on two lines, 'XYZ123' in chol and 918273 in thalach."""
    rows = [GOOD,
            GOOD.replace(",233,", ",987654,"),
            GOOD.replace(",233,", ",XYZ123,"),
            GOOD.replace(",233,", ",987654,").replace(",150,", ",918273,"),
            GOOD]
    path = tmp_path / "hospital.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_data_file_error_reason_names_fields_and_counts_but_no_value(tmp_path: Path) -> None:
    with pytest.raises(DataFileError) as info:
        read_table(hospital_file(tmp_path))
    exc = info.value
    assert all(secret in str(exc) for secret in SECRETS)  # the hospital's own log sees the values
    reason = safe_reason(exc)
    assert reason == data_error_summary(exc)
    for secret in SECRETS:
        assert secret not in reason
    assert "4 problem(s)" in reason
    assert "out-of-range value in field 'chol' on 2 line(s)" in reason
    assert "non-numeric value in field 'chol' on 1 line(s)" in reason
    assert "out-of-range value in field 'thalach' on 1 line(s)" in reason


def test_lines_and_encodings_are_summarised_without_content(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text(GOOD + ",XYZ123\n" + "9" * 1200 + "XYZ123\n" + GOOD + "\n")
    with pytest.raises(DataFileError) as info:
        read_table(path)
    reason = safe_reason(info.value)
    assert "XYZ123" not in reason and "999" not in reason
    assert "wrong number of fields on 1 line(s)" in reason and "line too long on 1 line(s)" in reason
    latin = tmp_path / "latin.csv"
    latin.write_bytes(GOOD.encode() + b"\nXYZ123 \xe9\n")
    with pytest.raises(DataFileError) as info:
        read_table(latin)
    reason = safe_reason(info.value)
    assert "XYZ123" not in reason and "unreadable file" in reason


@pytest.mark.parametrize("exc", [ValueError("secret 4242"), KeyError("4242"), RuntimeError("row 4242 failed"),
                                 OSError("4242"), ZeroDivisionError("4242 / 0")], ids=lambda e: type(e).__name__)
def test_any_other_exception_becomes_its_type_only(exc: Exception) -> None:
    reason = safe_reason(exc)
    assert "4242" not in reason
    assert reason.startswith(type(exc).__name__)


def test_missing_file_names_only_the_path() -> None:
    reason = safe_reason(FileNotFoundError(2, "No such file 4242", "/data/cleveland.csv"))
    assert "/data/cleveland.csv" in reason and "4242" not in reason


@pytest.mark.parametrize("exc", [Refused("privacy.require", "privacy.mode=none", "dp-sgd"),
                                 PolicyError("policy.yaml, line 3, key privacy.delta: must be a number"),
                                 BudgetError("the run's budget is spent"),
                                 HospitalFailure("the hospital's data file is missing")],
                         ids=lambda e: type(e).__name__)
def test_the_projects_own_wording_passes_unchanged(exc: Exception) -> None:
    assert safe_reason(exc) == str(exc)
