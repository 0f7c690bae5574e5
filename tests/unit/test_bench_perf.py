"""bench/perf.py's CPU accounting by phase (the numbers behind bench/results/perf)."""

from __future__ import annotations

import pytest

from bench.perf import cpu_by_phase, cpu_by_phase_table


def test_cpu_by_phase_splits_each_group_at_the_milestones() -> None:
    row = {"wall_s": 4.0, "milestones_s": {"first message sent": 1.0, "statistics done": 3.0},
           "cpu_timeline": [{"t": 0.0, "simulation": 0.0},
                            {"t": 1.0, "simulation": 0.8},
                            {"t": 2.0, "simulation": 1.0, "ray workers": 1.5},
                            {"t": 3.0, "simulation": 1.1, "ray workers": 3.5},
                            {"t": 4.0, "simulation": 1.9, "ray workers": 3.6}]}
    phases = cpu_by_phase(row)
    assert [(name, wall) for name, wall, _ in phases] == [("first message sent", 1.0), ("statistics done", 2.0),
                                                           ("stream ended", 1.0)]
    assert phases[0][2] == pytest.approx({"simulation": 0.8})
    assert phases[1][2] == pytest.approx({"simulation": 0.3, "ray workers": 3.5})
    assert phases[2][2] == pytest.approx({"simulation": 0.8, "ray workers": 0.1})
    table = cpu_by_phase_table("a", row)
    assert table[-2] == "| statistics done | 2.0 | 3.5 | 0.3 | 3.8 |"
