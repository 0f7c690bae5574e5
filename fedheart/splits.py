"""Per-hospital train/test splits.

The test rows are chosen FLamby's way: among the rows FLamby keeps (complete outside slope, ca,
thal), a seeded ``train_test_split`` stratified by label when both classes have more than 2 rows.
With seed 43 these are exactly FLamby's test rows. The ``project`` pipeline trains on every other
row (including the incomplete rows FLamby dropped); the ``flamby`` pipeline only on FLamby's
train rows.

``train_fraction=1.0`` keeps no test rows: the ``project`` pipeline trains on every row, the ``flamby``
pipeline on every complete row. That is for a ``data.holdout`` run, where the held-out hospital is the
test set (the configuration allows 1.0 only there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from fedheart.preprocess import flamby_complete
from fedheart.tables import HospitalTable

FLAMBY_SEED = 43
FLAMBY_TRAIN_FRACTION = 0.66


@dataclass(frozen=True)
class Split:
    """Positions (into the table's rows) of the training and test rows."""

    train: np.ndarray
    test: np.ndarray


def split_table(table: HospitalTable, *, seed: int = FLAMBY_SEED, pipeline: str = "project",
                train_fraction: float = FLAMBY_TRAIN_FRACTION) -> Split:
    """Split one hospital's rows; see the module docstring for the rule."""
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    labels = table.labels
    complete = flamby_complete(table.frame)
    candidates = np.flatnonzero(complete)
    if len(candidates) < 4:  # a hospital's own file with too few complete rows: use all rows
        candidates = np.arange(len(labels))
    if train_fraction == 1.0:  # no test rows: train on all (the flamby pipeline: all complete) rows
        train = candidates if pipeline == "flamby" else np.arange(len(labels))
        return Split(train=train, test=np.array([], dtype=int))
    cand_labels = labels[candidates]
    classes, counts = np.unique(cand_labels, return_counts=True)
    stratify = cand_labels if len(classes) > 1 and (counts > 2).all() else None
    train_pos, test_pos = train_test_split(
        np.arange(len(candidates)), train_size=train_fraction, test_size=1.0 - train_fraction,
        random_state=seed, shuffle=True, stratify=stratify)
    test = np.sort(candidates[test_pos])
    flamby_train = np.sort(candidates[train_pos])
    train = flamby_train if pipeline == "flamby" else np.setdiff1d(np.arange(len(labels)), test)
    return Split(train=train, test=test)
