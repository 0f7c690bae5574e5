"""The UCI Heart Disease schema: columns, value ranges, the four hospitals."""

from __future__ import annotations

from dataclasses import dataclass

COLUMNS: tuple[str, ...] = (
    "age", "sex", "cp", "trestbps", "chol", "fbs", "restecg",
    "thalach", "exang", "oldpeak", "slope", "ca", "thal", "num",
)
LABEL = "num"
FEATURES: tuple[str, ...] = COLUMNS[:-1]


@dataclass(frozen=True)
class FieldSpec:
    """What a valid value of one column looks like."""

    name: str
    description: str
    low: float
    high: float
    allowed: tuple[float, ...] | None = None  # categorical / binary codes
    integer: bool = False


FIELDS: dict[str, FieldSpec] = {
    f.name: f
    for f in (
        FieldSpec("age", "age in years", 1, 120, integer=True),
        FieldSpec("sex", "sex (1 = male, 0 = female)", 0, 1, (0, 1)),
        FieldSpec("cp", "chest pain type (1-4)", 1, 4, (1, 2, 3, 4)),
        FieldSpec("trestbps", "resting blood pressure (mm Hg)", 0, 300),
        FieldSpec("chol", "serum cholesterol (mg/dl)", 0, 1000),
        FieldSpec("fbs", "fasting blood sugar > 120 mg/dl (1/0)", 0, 1, (0, 1)),
        FieldSpec("restecg", "resting ECG result (0-2)", 0, 2, (0, 1, 2)),
        FieldSpec("thalach", "maximum heart rate achieved", 30, 250),
        FieldSpec("exang", "exercise induced angina (1/0)", 0, 1, (0, 1)),
        FieldSpec("oldpeak", "ST depression induced by exercise", -5, 10),
        FieldSpec("slope", "slope of the peak exercise ST segment (1-3)", 1, 3, (1, 2, 3)),
        FieldSpec("ca", "major vessels coloured by fluoroscopy (0-3)", 0, 3, (0, 1, 2, 3)),
        FieldSpec("thal", "thallium scan (3 normal, 6 fixed, 7 reversible)", 3, 7, (3, 6, 7)),
        FieldSpec("num", "diagnosis (0 = no disease, 1-4 = disease)", 0, 4, (0, 1, 2, 3, 4)),
    )
}

# Values that mean "not measured" although they are numbers.
IMPOSSIBLE_ZEROS: tuple[str, ...] = ("chol", "trestbps")


@dataclass(frozen=True)
class Hospital:
    """One of the four UCI hospitals (a natural data silo)."""

    center_id: int
    key: str  # short name used by FLamby and in configs
    name: str
    filename: str
    sha256: str


HOSPITALS: tuple[Hospital, ...] = (
    Hospital(0, "cleveland", "Cleveland Clinic Foundation", "processed.cleveland.data",
             "a74b7efa387bc9d108d7d0115d831fe9b414b29ae7124f331b622b4efa0427c8"),
    Hospital(1, "hungarian", "Hungarian Institute of Cardiology, Budapest", "processed.hungarian.data",
             "d1ad108f785768cd3d7e82dc522e6f5a61eea93cccfb3a46ee8076f73fc3d796"),
    Hospital(2, "switzerland", "University Hospitals Zurich and Basel", "processed.switzerland.data",
             "834a405ccf5b66ab4056bb77794adc8df0b7125186454c0a1d002d33c6c3b314"),
    Hospital(3, "va", "V.A. Medical Center, Long Beach", "processed.va.data",
             "e7c93d8d0d2acdadfa4c5e8de768e2191e7f618b952e29623f1f0d5949ff6b8f"),
)


def hospital(key_or_id: str | int) -> Hospital:
    """Look a hospital up by key (``"cleveland"``) or center id (``0``)."""
    for h in HOSPITALS:
        if key_or_id in (h.key, h.center_id, str(h.center_id)):
            return h
    known = ", ".join(f"{h.center_id}={h.key}" for h in HOSPITALS)
    raise KeyError(f"unknown hospital {key_or_id!r}; known: {known}")
