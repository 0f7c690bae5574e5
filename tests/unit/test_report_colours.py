"""report.html's plots: one colour per hospital in every panel, whatever order the replies came in."""

from __future__ import annotations

import pandas as pd
from matplotlib.colors import to_hex

from fedheart.colours import HOSPITAL_COLOURS, colour, ordered
from fedheart.report import _figure, _per_round
from fedheart.schema import HOSPITALS


def _rows() -> pd.DataFrame:
    """Train replies in arrival order (va before switzerland, as in a real run), evaluations sorted."""
    arrival = ["hungarian", "cleveland", "va", "switzerland"]
    rows = [{"round": r, "phase": "train", "hospital": h, "train-loss": 0.5 - 0.01 * r}
            for r in (1, 2) for h in arrival]
    rows += [{"round": r, "phase": "evaluate", "hospital": h.key, "loss": 0.4, "auc": 0.8} for r in (1, 2)
             for h in HOSPITALS]
    return pd.DataFrame(rows)


def _colours(ax) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {line.get_label(): to_hex(line.get_color()) for line in ax.get_lines()}


def test_each_hospital_keeps_its_colour_across_panels() -> None:
    rows = _rows()
    _, (train, test) = _figure(2)
    _per_round(train, rows[rows["phase"] == "train"], "train-loss", "train")
    _per_round(test, rows[rows["phase"] == "evaluate"], "loss", "test")
    a, b = _colours(train), _colours(test)
    assert set(a) == {h.key for h in HOSPITALS}
    assert a == b  # the bug: the training-loss panel gave switzerland and va each other's colours
    assert len(set(a.values())) == len(HOSPITALS)
    assert [line.get_label() for line in train.get_lines()] == [h.key for h in HOSPITALS]  # legend order


def test_palette_is_fixed_for_the_four_hospitals_and_stable_for_others() -> None:
    assert list(HOSPITAL_COLOURS) == [h.key for h in HOSPITALS]
    assert len(set(HOSPITAL_COLOURS.values())) == len(HOSPITALS)
    assert colour("st-elsewhere") == colour("st-elsewhere")
    assert colour("st-elsewhere") not in HOSPITAL_COLOURS.values()
    assert ordered(["va", "zurich-2", "cleveland", "va", "aarhus"]) == ["cleveland", "va", "aarhus", "zurich-2"]
