"""Read and check a hospital's table (UCI 14-column format, header optional).

Every problem is reported with file, line and field; the file is only read, never modified.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fedheart.schema import COLUMNS, FEATURES, FIELDS, LABEL

MISSING_TOKENS = ("?", "")
REQUIRED = ("age", "sex", "cp", LABEL)  # recorded by every UCI hospital
MAX_LINE_CHARS = 1000
MAX_FILE_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data file."""

    path: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.path + (f", line {self.line}" if self.line else "")
        where += f", field '{self.field}'" if self.field else ""
        return f"{where}: {self.message}"


class DataFileError(ValueError):
    """A data file cannot be used; ``problems`` lists every reason found."""

    def __init__(self, problems: list[Problem], limit: int = 15) -> None:
        self.problems = problems
        shown = "\n".join(f"  - {p}" for p in problems[:limit])
        more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
        super().__init__(f"{len(problems)} problem(s) in {problems[0].path}:\n{shown}{more}")


@dataclass
class HospitalTable:
    """A validated table: numeric values (NaN = missing), indexed by 1-based file line."""

    path: str
    frame: pd.DataFrame
    has_header: bool
    problems: list[Problem] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        """Binary label: disease present (num > 0)."""
        return (self.frame[LABEL].to_numpy() > 0).astype(np.int64)

    @property
    def file_rows(self) -> np.ndarray:
        """0-based data-row index (FLamby's ``file_row``)."""
        return self.frame.index.to_numpy() - (2 if self.has_header else 1)


def _short(value: str, width: int = 24) -> str:
    return repr(value if len(value) <= width else value[:width] + "...")


def _decode(path: Path, raw: bytes) -> tuple[str | None, list[Problem]]:
    name = str(path)
    if not raw.strip():
        return None, [Problem(name, None, None, "the file is empty (no data rows)")]
    if b"\x00" in raw[:65536]:
        encoding = _wide_encoding(raw[:65536])
        if encoding:
            return None, [Problem(name, None, None, f"the file is {encoding} text, not UTF-8; save it as UTF-8 CSV")]
        return None, [Problem(name, None, None, "the file is binary, not a comma-separated text file")]
    try:
        return raw.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, [Problem(name, line, None,
                              f"not UTF-8/ASCII text (byte 0x{raw[exc.start]:02x}); save it as UTF-8 CSV")]


def _wide_encoding(head: bytes) -> str | None:
    """'UTF-16' or 'UTF-32' when ``head`` looks like that text (by its BOM or its NUL pattern), else None."""
    if head.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "UTF-32"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    even, odd = head[0::2], head[1::2]
    for half in (even, odd):  # ASCII text in UTF-16: every other byte is NUL
        if len(half) >= 8 and half.count(0) == len(half):
            return "UTF-16"
    return None


def _is_header(cells: list[str], widths: tuple[int, ...] = (len(COLUMNS),)) -> bool:
    return [c.strip().lower() for c in cells] in [list(COLUMNS[:w]) for w in widths]


def _width_problem(expected: tuple[int, ...], found: int) -> str:
    if expected == (len(COLUMNS),):
        return f"expected {len(COLUMNS)} comma-separated fields ({' '.join(COLUMNS)}), found {found}"
    if expected == (len(FEATURES),):
        return (f"expected {len(FEATURES)} comma-separated fields ({' '.join(FEATURES)}) as in the file's "
                f"first row, found {found}")
    return (f"expected {len(COLUMNS)} comma-separated fields ({' '.join(COLUMNS)}) or {len(FEATURES)} "
            f"without {LABEL}, found {found}")


def _split_lines(name: str, text: str, label_optional: bool = False,
                 ) -> tuple[list[tuple[int, list[str]]], bool, list[Problem]]:
    """Split text into (line number, cells) rows; check line length and field count.

    ``label_optional``: rows may also have the 13 feature fields only (the header or the first
    row decides for the whole file); the missing label reads as missing.
    """
    rows: list[tuple[int, list[str]]] = []
    problems: list[Problem] = []
    has_header = False
    widths = (len(COLUMNS), len(FEATURES)) if label_optional else (len(COLUMNS),)
    width: int | None = None  # fixed by the header or the first well-formed row
    for number, line in enumerate(io.StringIO(text), start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if len(line) > MAX_LINE_CHARS:
            problems.append(Problem(name, number, None,
                                    f"line is {len(line)} characters long (max {MAX_LINE_CHARS})"))
            continue
        cells = next(csv.reader([line]))
        if not rows and not has_header and _is_header(cells, widths):
            has_header, width = True, len(cells)
            continue
        expected = (width,) if width else widths
        if len(cells) not in expected:
            problems.append(Problem(name, number, None, _width_problem(expected, len(cells))))
            continue
        width = len(cells)
        rows.append((number, [c.strip() for c in cells] + [""] * (len(COLUMNS) - width)))
    return rows, has_header, problems


def _check_values(name: str, raw: pd.DataFrame, required: tuple[str, ...] = REQUIRED,
                  ) -> tuple[pd.DataFrame, list[Problem]]:
    """Convert strings to numbers column by column; report non-numeric and out-of-range values."""
    problems: list[Problem] = []
    values = pd.DataFrame(index=raw.index)
    for col in COLUMNS:
        spec = FIELDS[col]
        text = raw[col]
        missing = text.isin(MISSING_TOKENS)
        numbers = pd.to_numeric(text.where(~missing), errors="coerce")
        for line in raw.index[numbers.isna() & ~missing]:
            problems.append(Problem(name, int(line), col,
                                    f"{_short(text[line])} is not a number (use '?' for a missing value)"))
        bad = numbers.notna() & ~numbers.between(spec.low, spec.high)
        if spec.allowed is not None:
            bad |= numbers.notna() & ~numbers.isin(spec.allowed)
        for line in raw.index[bad]:
            rule = (f"one of {', '.join(f'{a:g}' for a in spec.allowed)}" if spec.allowed
                    else f"between {spec.low:g} and {spec.high:g}")
            problems.append(Problem(name, int(line), col,
                                    f"value {numbers[line]:g} is out of range: {spec.description} "
                                    f"must be {rule}"))
        if col in required:
            for line in raw.index[missing]:
                problems.append(Problem(name, int(line), col, f"{spec.description} is required but missing"))
        values[col] = numbers.where(~bad)
    return values, problems


def read_table(path: str | Path, *, strict: bool = True, label_optional: bool = False) -> HospitalTable:
    """Read and validate one hospital file.

    With ``strict`` (the default) any problem raises :class:`DataFileError`; otherwise the
    problems are returned on the table (used by ``fedheart validate`` to report them all).
    ``label_optional`` (patients to score): the label may be missing, or the column absent.
    """
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise DataFileError([Problem(name, None, None, "no such file")])
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DataFileError([Problem(name, None, None, f"file is larger than {MAX_FILE_BYTES >> 20} MiB")])
    text, problems = _decode(path, path.read_bytes())
    rows: list[tuple[int, list[str]]] = []
    has_header = False
    if text is not None:
        rows, has_header, line_problems = _split_lines(name, text, label_optional)
        problems += line_problems
        if not rows and not problems:
            problems.append(Problem(name, None, None, "the file has no data rows"))
    raw = pd.DataFrame([cells for _, cells in rows], columns=list(COLUMNS),
                       index=pd.Index([n for n, _ in rows], name="line"), dtype=object)
    required = tuple(c for c in REQUIRED if c != LABEL) if label_optional else REQUIRED
    frame, value_problems = _check_values(name, raw, required) if rows else (raw.astype(float), [])
    problems += value_problems
    problems.sort(key=lambda p: (p.line or 0, COLUMNS.index(p.field) if p.field else -1))
    table = HospitalTable(name, frame.astype(float), has_header, problems)
    if strict and problems:
        raise DataFileError(problems)
    return table


def summarize(table: HospitalTable) -> dict:
    """Rows, missing values per field, label balance: what ``fedheart validate`` prints."""
    frame = table.frame
    labels = frame[LABEL].dropna()
    return {
        "path": table.path,
        "rows": len(frame),
        "header": table.has_header,
        "missing": {c: int(frame[c].isna().sum()) for c in COLUMNS},
        "impossible_zeros": {c: int((frame[c] == 0).sum()) for c in ("chol", "trestbps")},
        "positive": int((labels > 0).sum()),
        "negative": int((labels == 0).sum()),
        "problems": [str(p) for p in table.problems],
    }


def format_report(summary: dict) -> str:
    """A readable validation report for a person."""
    rows = summary["rows"]
    lines = [f"File: {summary['path']}",
             f"Rows: {rows} ({'with' if summary['header'] else 'no'} header)"]
    if rows:
        pos = summary["positive"]
        lines.append(f"Label (num > 0): {pos} positive ({pos / rows:.1%}), {summary['negative']} negative")
        lines.append("Missing values per field:")
        for col, n in summary["missing"].items():
            zeros = summary["impossible_zeros"].get(col, 0)
            note = f"  (+{zeros} zeros treated as missing)" if zeros else ""
            lines.append(f"  {col:<9} {n:>5} ({n / rows:6.1%}){note}")
    problems: Iterable[str] = summary["problems"]
    problems = list(problems)
    if problems:
        lines.append(f"Problems: {len(problems)}")
        lines += [f"  - {p}" for p in problems[:50]]
        if len(problems) > 50:
            lines.append(f"  ... and {len(problems) - 50} more")
        lines.append("Result: NOT usable until the problems above are fixed.")
    else:
        lines.append("Problems: none")
        lines.append("Result: OK, this file can join a federation.")
    return "\n".join(lines)
