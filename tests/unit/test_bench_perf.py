"""bench/perf.py's CPU accounting by phase (the numbers behind bench/results/perf)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.perf import cpu_by_phase, cpu_by_phase_table, import_breakdown, main


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


def test_import_breakdown_reads_each_packages_first_cumulative_time() -> None:
    stderr = ("import time: self [us] | cumulative | imported package\n"
              "import time:       900 |     401000 |     scipy.stats\n"
              "import time:      1200 |    1900000 |   sklearn\n"
              "import time:       100 |        100 |   sklearn\n"  # listed again: the first one counts
              "import time:    131198 |    2021089 | torch\n"
              "import time:        50 |         60 |   torch.nn.other\n")
    assert import_breakdown(stderr) == pytest.approx({"scipy.stats": 0.401, "sklearn": 1.9, "torch": 2.021089})


def test_an_app_root_without_an_app_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--before", str(tmp_path), "--render"])
    assert f"--before {tmp_path}: no pyproject.toml there" in capsys.readouterr().err
