"""One colour per hospital, in one order, for every plot (report.html and ``fedheart view``).

The four UCI hospitals take the first four colours of the Okabe-Ito palette (readable with the common
colour-vision deficiencies) in the schema's order; any other hospital name gets one of the remaining
colours, chosen from its name so that it keeps it across plots and runs. The federation-level
series (pooled test set, means over hospitals) are drawn black and dashed.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from fedheart.schema import HOSPITALS

PALETTE: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
                            "#999999")
FEDERATION = "#000000"
HOSPITAL_COLOURS: dict[str, str] = {h.key: PALETTE[i] for i, h in enumerate(HOSPITALS)}
_SPARE = PALETTE[len(HOSPITALS):]


def colour(hospital: str) -> str:
    """The hospital's colour: fixed for the UCI hospitals, stable (by name) for any other."""
    return HOSPITAL_COLOURS.get(hospital) or _SPARE[zlib.crc32(hospital.encode()) % len(_SPARE)]


def ordered(names: Iterable[str]) -> list[str]:
    """``names`` without repeats, the UCI hospitals first in the schema's order, then the rest by name."""
    rank = {h.key: i for i, h in enumerate(HOSPITALS)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(rank)), n))
