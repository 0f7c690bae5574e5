"""Error text a hospital may send to the server: the kind of problem, the field and how many lines,
never a value from the file or a patient's line (the full text stays in the hospital's own log)."""

from __future__ import annotations

from collections import Counter

from fedheart.privacy.ledger import BudgetError
from fedheart.safeguard.policy import PolicyError, Refused
from fedheart.sources import DataNotFoundError
from fedheart.tables import DataFileError, Problem

# Exceptions whose text is the project's own wording about settings, never about data values.
SAFE = (Refused, PolicyError, BudgetError, DataNotFoundError)
KINDS = (("is not a number", "non-numeric value"), ("out of range", "out-of-range value"),
         ("required but missing", "missing required value"), ("comma-separated fields", "wrong number of fields"),
         ("characters long", "line too long"), ("no data rows", "no data rows"))


def problem_kind(problem: Problem) -> str:
    for marker, kind in KINDS:
        if marker in problem.message:
            return kind
    return "unreadable file (encoding or format)"


def data_error_summary(exc: DataFileError) -> str:
    """``DataFileError`` as counts of problem kinds per field."""
    counts = Counter((problem_kind(p), p.field) for p in exc.problems)
    parts = [f"{kind}" + (f" in field '{col}'" if col else "") + f" on {n} line(s)"
             for (kind, col), n in sorted(counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))]
    return f"the hospital's data file has {len(exc.problems)} problem(s): {'; '.join(parts)} (details in its log)"


class HospitalFailure(RuntimeError):
    """What a hospital tells the server about one of its failures (safe text only)."""


def safe_reason(exc: BaseException) -> str:
    """The text of ``exc`` that may leave the hospital."""
    if isinstance(exc, DataFileError):
        return data_error_summary(exc)
    if isinstance(exc, (*SAFE, HospitalFailure)):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"a file the hospital needs is missing: {exc.filename or 'unknown'} (details in its log)"
    return f"{type(exc).__name__} at the hospital (details in its log)"
