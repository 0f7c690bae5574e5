"""The hospital's hash-chained audit trail, and the fedheart audit / budget / check-policy commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fedheart.safeguard import audit
from fedheart.safeguard.budget import BudgetBook
from fedheart_cli.main import main as cli_main

N = 6
SHA = "c0" * 32


def trail(state: Path, n: int = N) -> list[bytes]:
    """``n`` entries alternating between runs 1 and 2; the trail's lines (with their newlines)."""
    for i in range(n):
        audit.append(state, {"run": str(1 + i % 2), "message": "train", "decision": "accepted",
                             "requested": {"privacy.epsilon": 1.0}, "epsilon": 0.1 * i, "lifetime": 0.1 * i})
    return (state / audit.AUDIT_FILE).read_bytes().splitlines(keepends=True)


def rewrite(state: Path, lines: list[bytes]) -> None:
    (state / audit.AUDIT_FILE).write_bytes(b"".join(lines))


def named_line(message: str) -> int:
    """The line a failed verification names first."""
    found = re.search(r"line (\d+)", message)
    assert found, message
    return int(found.group(1))


def test_appended_entries_chain_and_verify(tmp_path: Path) -> None:
    lines = trail(tmp_path)
    ok, message = audit.verify(tmp_path)
    assert ok, message
    assert f"{N} lines" in message
    records = [json.loads(raw) for raw in lines]
    assert [r["seq"] for r in records] == list(range(1, N + 1))
    assert records[0]["prev"] == audit.GENESIS
    assert all(r["prev"] == audit._sha(raw.rstrip(b"\n")) for r, raw in zip(records[1:], lines, strict=False))
    head = json.loads((tmp_path / audit.HEAD_FILE).read_text())
    assert head == {"lines": N, "sha256": audit._sha(lines[-1].rstrip(b"\n"))}
    assert [e["seq"] for e in audit.entries(tmp_path, run="2")] == [2, 4, 6]


def test_no_trail_does_not_verify(tmp_path: Path) -> None:
    assert not audit.verify(tmp_path)[0]


@pytest.mark.parametrize("k", [1, 3, N])
def test_edited_field_names_its_line(tmp_path: Path, k: int) -> None:
    lines = trail(tmp_path)
    record = json.loads(lines[k - 1])
    record["decision"] = "refused"
    lines[k - 1] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    rewrite(tmp_path, lines)
    ok, message = audit.verify(tmp_path)
    assert not ok and "changed" in message
    assert named_line(message) == k


@pytest.mark.parametrize("k", [1, 3, N - 1])
def test_deleted_line_names_its_line(tmp_path: Path, k: int) -> None:
    lines = trail(tmp_path)
    rewrite(tmp_path, lines[:k - 1] + lines[k:])
    ok, message = audit.verify(tmp_path)
    assert not ok
    assert named_line(message) == k and "removed" in message  # not the intact line before it


@pytest.mark.parametrize("k", [1, 3])
def test_swapped_lines_fail(tmp_path: Path, k: int) -> None:
    lines = trail(tmp_path)
    lines[k - 1], lines[k] = lines[k], lines[k - 1]
    rewrite(tmp_path, lines)
    ok, message = audit.verify(tmp_path)
    assert not ok and named_line(message) <= k + 1


def test_dropped_last_line_is_caught_by_the_head(tmp_path: Path) -> None:
    lines = trail(tmp_path)
    rewrite(tmp_path, lines[:-1])
    ok, message = audit.verify(tmp_path)
    assert not ok and "removed" in message and f"lines {N}" in message
    (tmp_path / audit.HEAD_FILE).unlink()
    assert not audit.verify(tmp_path)[0]


def test_torn_line_fails(tmp_path: Path) -> None:
    lines = trail(tmp_path)
    lines[2] = lines[2][: len(lines[2]) // 2] + b"\n"
    rewrite(tmp_path, lines)
    ok, message = audit.verify(tmp_path)
    assert not ok and named_line(message) == 3


def test_cli_audit_verify_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = trail(tmp_path)
    assert cli_main(["audit", "verify", str(tmp_path)]) == 0
    assert "intact" in capsys.readouterr().out
    record = json.loads(lines[1])
    record["epsilon"] = 0.0
    lines[1] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    rewrite(tmp_path, lines)
    assert cli_main(["audit", "verify", str(tmp_path)]) != 0
    assert "line 2" in capsys.readouterr().err
    assert cli_main(["audit", "verify", str(tmp_path / "nowhere")]) != 0


def test_cli_audit_show_prints_one_line_per_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trail(tmp_path)
    audit.append(tmp_path, {"run": "3", "message": "evaluate", "decision": "refused",
                            "reason": "refused by the hospital's policy", "overrides": {
                                "split-seed": {"requested": 7, "used": 43}}})
    assert cli_main(["audit", "show", str(tmp_path)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == N + 1
    assert "refused (refused by the hospital's policy)" in shown[-1] and "split-seed=43 (asked 7)" in shown[-1]
    assert cli_main(["audit", "show", str(tmp_path), "--run", "1"]) == 0
    only = capsys.readouterr().out.splitlines()
    assert len(only) == N // 2 and all(" run 1 " in line for line in only)


def test_cli_budget_prints_spent_and_left(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["budget", str(tmp_path)]) == 0
    assert "no privacy ledger" in capsys.readouterr().out
    book = BudgetBook.open(tmp_path, SHA, "cleveland")
    book.reserve(book.run(77), 1.0, 1e-5, 3.0)
    book.run(77).epsilon = 0.25
    book.save()
    policy = tmp_path / "policy.yaml"
    policy.write_text("privacy:\n  lifetime-epsilon: 3\n")
    assert cli_main(["budget", str(tmp_path), "--policy", str(policy)]) == 0
    out = capsys.readouterr().out
    assert "cleveland" in out and "charged 1.0000" in out and "left 2.0000 of 3" in out
    assert re.search(r"^\s+77\s.*1\.0000\s+0\.2500", out, re.M), out
    assert cli_main(["budget", str(tmp_path)]) == 0  # without --policy: the cap recorded at the last reservation
    assert "left 2.0000 of 3" in capsys.readouterr().out
    policy.write_text("privacy:\n  lifetime-epsilon: -1\n")
    assert cli_main(["budget", str(tmp_path), "--policy", str(policy)]) == 2


def test_cli_check_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("privacy:\n  max-epsilon-per-run: 0.5\n")
    bad.write_text("privacy:\n  delta: 1.0e-6\n  noise: 3\n")
    assert cli_main(["check-policy", str(good)]) == 0
    assert "policy OK" in capsys.readouterr().out
    assert cli_main(["check-policy", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "line 3" in err and "privacy.noise" in err
