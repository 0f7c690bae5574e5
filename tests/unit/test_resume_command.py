"""``python -m launcher.resume``: the overrides it resubmits, and the problems it names before submitting
anything (its run on a real deployment: tests/e2e/test_superlink_restart.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher import resume
from launcher.flower import FlowerError


def test_later_overrides_replace_those_of_the_same_key_and_keep_the_rest() -> None:
    original = ["rounds=3", "seed=0", "strategy=fedprox", "+extra=1"]
    assert resume.merged(original, ["rounds=20", "resume=/runs/a", "extra=2"]) == \
        ["rounds=20", "seed=0", "strategy=fedprox", "extra=2", "resume=/runs/a"]


def test_a_missing_or_unknown_connection_is_named(tmp_path: Path) -> None:
    with pytest.raises(FlowerError, match=r"config\.toml: no readable Flower configuration"):
        resume.connection(tmp_path, None, tmp_path)
    (tmp_path / "config.toml").write_text('[superlink]\ndefault = "a"\n\n[superlink.a]\naddress = "x:1"\n')
    with pytest.raises(FlowerError, match=r"no SuperLink connection 'b' \(connections: a\)"):
        resume.connection(tmp_path, "b", tmp_path)
    link = resume.connection(tmp_path, None, tmp_path / "work")
    assert link.connection == "a" and link.env["FLWR_HOME"] == str(tmp_path)


def test_a_folder_without_a_checkpoint_is_refused_before_the_superlink_is_asked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.toml").write_text('[superlink]\ndefault = "a"\n\n[superlink.a]\naddress = "127.0.0.1:9"\n'
                                          "insecure = true\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert resume.main([str(run_dir), "--flwr-home", str(tmp_path)]) == 2
    assert f"resume: no checkpoint at {run_dir / 'checkpoint.pt'}" in capsys.readouterr().err
    assert resume.main([str(tmp_path / "elsewhere"), "--flwr-home", str(tmp_path)]) == 2
    assert "give --run-id" in capsys.readouterr().err


def test_an_unreachable_superlink_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fedheart.runs import RunDir, write_json
    from launcher.flower import free_port

    (tmp_path / "config.toml").write_text(f'[superlink]\ndefault = "a"\n\n[superlink.a]\n'
                                          f'address = "127.0.0.1:{free_port()}"\ninsecure = true\n')
    run_dir = tmp_path / "run"
    RunDir(run_dir).save_checkpoint({"round": 1, "weights": {}})
    write_json(run_dir / "tracking.json", {"experiment": "x", "run_id": 42})
    assert resume.main([str(run_dir), "--flwr-home", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cannot list the runs of SuperLink connection 'a'" in err and "config.toml" in err
