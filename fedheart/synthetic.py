"""Synthetic hospitals for scale tests: the UCI schema, rows drawn from the real hospitals.

Each synthetic hospital picks one real hospital as its "parent" (so the case mix and the fields
that are never recorded, e.g. ``ca``/``thal`` at VA, follow a real site) and draws its own

* size: log-uniform in ``sizes`` rows,
* label balance: the share of diseased patients uniform in ``positive_rates``,
* missingness: every optional field is blanked with its own probability, uniform in
  ``extra_missing`` per hospital (on top of what the parent row already lacks).

Rows are resampled whole (bootstrap within each label of the parent), so every value is one a
real hospital recorded and the written file passes :func:`fedheart.tables.read_table`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedheart.schema import COLUMNS, HOSPITALS, LABEL
from fedheart.tables import REQUIRED, read_table

OPTIONAL = tuple(c for c in COLUMNS if c not in REQUIRED)


@dataclass(frozen=True)
class Profile:
    """How one synthetic hospital differs from the others."""

    name: str
    parent: str
    rows: int
    positive_rate: float
    extra_missing: dict[str, float]


def draw_profiles(count: int, parents: list[str], seed: int = 0, sizes: tuple[int, int] = (40, 400),
                  positive_rates: tuple[float, float] = (0.2, 0.9),
                  extra_missing: tuple[float, float] = (0.0, 0.3)) -> list[Profile]:
    """``count`` hospital profiles: parent, size, label balance and per-field missingness."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not 1 <= sizes[0] <= sizes[1]:
        raise ValueError(f"sizes must be 1 <= low <= high, got {sizes}")
    rng = np.random.default_rng(seed)
    width = len(str(count - 1))
    profiles = []
    for i in range(count):
        rows = round(float(np.exp(rng.uniform(np.log(sizes[0]), np.log(sizes[1])))))
        missing = {c: float(rng.uniform(*extra_missing)) for c in OPTIONAL}
        profiles.append(Profile(f"synth-{i:0{width}d}", parents[i % len(parents)], rows,
                                float(rng.uniform(*positive_rates)), missing))
    return profiles


def sample_hospital(parent: pd.DataFrame, profile: Profile, rng: np.random.Generator) -> pd.DataFrame:
    """Rows for one profile: bootstrap within each label of the parent, then blank optional fields."""
    positive = (parent[LABEL] > 0).to_numpy()
    n_pos = int(rng.binomial(profile.rows, profile.positive_rate))
    n_pos = min(max(n_pos, 1), profile.rows - 1) if profile.rows >= 2 else n_pos  # both classes when possible
    picks = np.concatenate([rng.choice(np.flatnonzero(positive), n_pos),
                            rng.choice(np.flatnonzero(~positive), profile.rows - n_pos)])
    rows = parent.iloc[rng.permutation(picks)].reset_index(drop=True)
    for col, p in profile.extra_missing.items():
        rows.loc[rng.random(len(rows)) < p, col] = np.nan
    return rows


def to_uci_csv(frame: pd.DataFrame) -> str:
    """UCI ``processed.*.data`` text: 14 comma-separated fields, ``?`` for missing, no header."""
    def cell(v: float) -> str:
        return "?" if pd.isna(v) else f"{v:g}"

    return "".join(",".join(cell(v) for v in row) + "\n" for row in frame[list(COLUMNS)].itertuples(index=False))


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def generate(out_dir: str | Path, count: int, source_dir: str | Path, seed: int = 0, **ranges: tuple) -> list[Path]:
    """Write ``count`` synthetic hospitals as ``out_dir/synth-NNN.data``; returns the paths in order.

    ``source_dir`` holds the real ``processed.*.data`` files; ``ranges`` go to :func:`draw_profiles`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parents = {h.key: read_table(Path(source_dir) / h.filename).frame for h in HOSPITALS}
    rng = np.random.default_rng([seed, 1])
    paths = []
    for profile in draw_profiles(count, list(parents), seed=seed, **ranges):
        path = out / f"{profile.name}.data"
        write_atomic(path, to_uci_csv(sample_hospital(parents[profile.parent], profile, rng)))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Write synthetic UCI-format hospitals for scale tests.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--source", type=Path, required=True, help="folder with the real processed.*.data")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = generate(args.out_dir, args.count, args.source, seed=args.seed)
    print(f"wrote {len(paths)} hospitals to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
