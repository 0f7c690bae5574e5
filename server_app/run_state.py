"""What the server knows of a run as it goes: the hospitals and the history of its rounds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Hospital:
    node_id: int
    name: str
    train_rows: int
    holdout: bool = False  # data.holdout: it evaluates only (external validation)


@dataclass
class History:
    last_round: int = 0
    federation: dict[int, dict[str, float]] = field(default_factory=dict)
    final: dict[str, dict[str, Any]] = field(default_factory=dict)
    phase_seconds: dict[str, float] = field(default_factory=dict)  # statistics, baselines (bench/perf.py)
