"""A process killed (SIGKILL) while it writes checkpoints never leaves a corrupt or partial one.

A forked child writes checkpoints in a loop through RunDir.save_checkpoint (the server's own
call), each a full state whose every value encodes its round, and reports each finished write.
The parent kills it at a random point of its loop, then checks that load_checkpoint reads a
complete state no older than the last write the child reported. Repeated many times.
"""

from __future__ import annotations

import multiprocessing as mp
import random
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
import torch

from fedheart.runs import CHECKPOINT, RunDir, load_checkpoint

KILLS = 20
WEIGHTS = 250_000  # ~1 MB of floats per checkpoint: a write takes long enough to be hit mid-way


def _state(server_round: int) -> dict:
    return {"round": server_round, "weights": {"w": torch.full((WEIGHTS,), float(server_round)),
                                               "b": torch.full((3,), float(server_round))},
            "federation": {str(r): {"mean-accuracy": r / 100} for r in range(1, server_round + 1)}}


def _write_forever(folder: Path, start: int, reports: Connection) -> None:
    run = RunDir(folder)
    reports.send("started")
    server_round = start
    while True:
        server_round += 1
        run.save_checkpoint(_state(server_round))
        reports.send(server_round)


def _complete(state: dict) -> int:
    """The state's round, after checking that every part of it belongs to that round."""
    r = int(state["round"])
    assert set(state["weights"]) == {"w", "b"} and state["weights"]["w"].shape == (WEIGHTS,)
    assert all(bool(torch.all(t == r)) for t in state["weights"].values()), "weights of mixed rounds"
    assert sorted(map(int, state["federation"])) == list(range(1, r + 1))
    return r


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """A forked child must not inherit a busy OpenMP pool (it would hang in its first parallel op)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_torch_thread")
def test_sigkill_while_checkpointing_never_corrupts_the_checkpoint(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")  # no re-import of torch per child
    rng = random.Random(20261125)
    RunDir(tmp_path).save_checkpoint(_state(1))
    last = 1
    for _ in range(KILLS):
        parent, child = ctx.Pipe(duplex=False)
        writer = ctx.Process(target=_write_forever, args=(tmp_path, last, child), daemon=True)
        writer.start()
        assert parent.poll(60) and parent.recv() == "started"
        reported = last
        for _ in range(rng.randint(0, 3)):  # let 0-3 writes finish, then kill during the next steps
            assert parent.poll(60), "the writer stopped writing"
            reported = parent.recv()
        writer.kill()
        writer.join(30)
        while parent.poll():  # writes finished before the kill landed
            reported = parent.recv()
        assert writer.exitcode == -9
        last = _complete(load_checkpoint(tmp_path))
        assert last >= reported, f"the checkpoint went back from round {reported} to {last}"
    assert last > KILLS // 2, "the writer made little progress: the kills did not hit a running loop"
    assert (tmp_path / CHECKPOINT).is_file()
