"""The hospital's lifetime privacy ledger: accumulation, the lifetime cap, restarts and concurrent writers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedheart.safeguard.budget import BudgetBook, books
from fedheart.safeguard.policy import Refused

SHA = "5e" * 32
REPO = Path(__file__).resolve().parents[2]
TRANSACTIONS = 50

# One writer process: waits on stdin so both start their transactions together (no sleeps), then does
# TRANSACTIONS read-modify-write transactions of the ledger, each under the state folder's lock.
WORKER = """
import sys
from pathlib import Path
from fedheart.safeguard.budget import BudgetBook
from fedheart.safeguard.files import locked

state, sha, tag, count = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
print("ready", flush=True)
sys.stdin.readline()
for i in range(count):
    with locked(state):
        book = BudgetBook.open(state, sha, "cleveland")
        run = book.run(f"{tag}-{i}")
        run.evaluations += 1
        book.run("shared").evaluations += 1
        book.save()
print("done", flush=True)
"""


def test_reserve_accumulates_across_runs_and_refuses_past_the_lifetime_cap(tmp_path: Path) -> None:
    book = BudgetBook.open(tmp_path, SHA, "cleveland")
    book.reserve(book.run(1), 1.0, 1e-5, 3.0)
    book.reserve(book.run(2), 1.5, 1e-5, 3.0)
    assert book.lifetime() == pytest.approx(2.5)
    third = book.run(3)
    with pytest.raises(Refused) as info:
        book.reserve(third, 1.0, 1e-5, 3.0)
    assert info.value.key == "privacy.lifetime-epsilon"
    assert "0.500 left" in str(info.value.allowed)
    assert third.reserved == 0.0 and book.lifetime() == pytest.approx(2.5)
    book.reserve(third, 0.5, 1e-5, 3.0)  # exactly what is left
    assert book.lifetime() == pytest.approx(3.0)
    with pytest.raises(Refused):
        book.reserve(book.run(4), 1e-3, 1e-5, 3.0)


def test_a_run_reserves_once_and_is_charged_what_it_spent_if_more(tmp_path: Path) -> None:
    book = BudgetBook.open(tmp_path, SHA)
    run = book.run("r")
    book.reserve(run, 1.0, 1e-5, 3.0)
    book.reserve(run, 2.5, 1e-6, 3.0)  # already reserved: unchanged
    assert (run.reserved, run.delta) == (1.0, 1e-5)
    run.epsilon = 1.7  # spent beyond its reservation (e.g. an older ledger)
    assert book.lifetime() == pytest.approx(1.7)
    assert book.lifetime(exclude="r") == 0.0
    with pytest.raises(Refused):
        book.reserve(book.run("next"), 1.5, 1e-5, 3.0)


def test_ledger_survives_a_restart(tmp_path: Path) -> None:
    book = BudgetBook.open(tmp_path, SHA, "cleveland")
    first = book.run(11)
    book.reserve(first, 1.0, 1e-5, 3.0)
    first.history = [(1.1, 0.05, 10)]
    first.statistics, first.public_rows, first.evaluations, first.epsilon = True, 201.5, 3, 0.8
    book.save()
    assert (tmp_path / "budget" / f"{SHA}.json").is_file()
    assert [p.name for p in (tmp_path / "budget").iterdir()] == [f"{SHA}.json"]  # no temp file left

    again = BudgetBook.open(tmp_path, SHA)  # as a restarted SuperNode does: only the file carries over
    assert again.data_name == "cleveland" and list(again.runs) == ["11"]
    assert again.run(11) == first
    assert again.run("11").history == [(1.1, 0.05, 10)]
    assert again.lifetime() == pytest.approx(1.0)
    again.reserve(again.run(12), 1.5, 1e-5, 3.0)
    again.save()
    assert [b.summary()["lifetime"] for b in books(tmp_path)] == [pytest.approx(2.5)]
    with pytest.raises(Refused):  # the cap counts the runs from before the restart
        BudgetBook.open(tmp_path, SHA).reserve(BudgetBook.open(tmp_path, SHA).run(13), 1.0, 1e-5, 3.0)


def test_unknown_state_folder_has_no_books(tmp_path: Path) -> None:
    assert books(tmp_path) == []
    assert BudgetBook.open(tmp_path, SHA).runs == {}


def test_two_processes_under_the_lock_lose_no_update(tmp_path: Path) -> None:
    state = tmp_path / "state"
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(state), SHA, tag, str(TRANSACTIONS)],
                                cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for tag in ("a", "b")]
    try:
        for worker in workers:  # both imported and waiting
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.close()
        for worker in workers:
            assert worker.wait(timeout=120) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    data = json.loads((state / "budget" / f"{SHA}.json").read_text())
    expected = {f"{tag}-{i}" for tag in ("a", "b") for i in range(TRANSACTIONS)}
    assert set(data["runs"]) - {"shared"} == expected  # every transaction's run is present
    assert all(data["runs"][k]["evaluations"] == 1 for k in expected)
    assert data["runs"]["shared"]["evaluations"] == 2 * TRANSACTIONS  # no increment lost
