"""PromptGrid: replies are noticed soon after they arrive, the timeout holds, the rest passes through."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from server_app import polling
from server_app.polling import MAX_POLL_S, MIN_POLL_S, PromptGrid, poll_interval


@pytest.fixture(autouse=True)
def _server_identity() -> None:
    """As in a ServerApp process (and launcher.loopback): Flower stamps it on every new message."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID


class Clock:
    """Stands in for ``time.monotonic`` and ``time.sleep`` in server_app.polling: no real waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(polling, "time", fake)
    return fake


class SlowGrid:
    """Replies to each pushed message ``delay`` seconds after the push (None: never); counts pulls."""

    def __init__(self, clock: Clock, delay: float | None) -> None:
        self.clock, self.delay, self.pushed, self.pulls = clock, delay, {}, 0

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for i, msg in enumerate(messages):
            msg.metadata.__dict__["_message_id"] = f"m{len(self.pushed) + i}"
            ids.append(msg.metadata.message_id)
            self.pushed[msg.metadata.message_id] = (msg, self.clock.now)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        self.pulls += 1
        now = self.clock.now
        return [Message(RecordDict({"c": ConfigRecord({"ok": 1})}), reply_to=self.pushed[i][0])
                for i in message_ids if self.delay is not None and now - self.pushed[i][1] >= self.delay]

    def get_node_ids(self) -> list[int]:
        return [1, 2]


def _messages(n: int) -> list[Message]:
    return [Message(RecordDict(), dst_node_id=i + 1, message_type="query.x") for i in range(n)]


def test_poll_interval_is_a_tenth_of_the_wait_within_bounds() -> None:
    assert poll_interval(0.0) == MIN_POLL_S
    assert poll_interval(1.0) == pytest.approx(0.1)
    assert poll_interval(3600.0) == MAX_POLL_S


@pytest.mark.parametrize("delay", [0.002, 0.25, 3.0, 40.0])
def test_replies_are_noticed_soon_after_they_arrive(clock: Clock, delay: float) -> None:
    inner = SlowGrid(clock, delay)
    replies = list(PromptGrid(inner).send_and_receive(_messages(2), timeout=60))  # type: ignore[arg-type]
    assert len(replies) == 2
    assert {r.metadata.reply_to_message_id for r in replies} == set(inner.pushed)
    # Flower's InMemoryGrid notices replies up to 0.1 s late, its HttpGrid up to 3 s late
    lateness = clock.now - delay
    assert 0 <= lateness <= max(MIN_POLL_S, min(MAX_POLL_S, 0.1 * delay)) + 1e-9, lateness
    assert inner.pulls <= 140, inner.pulls  # a 40 s phase: ~3 polls a second, HttpGrid 1 every 3 s


def test_the_timeout_returns_what_came(clock: Clock) -> None:
    inner = SlowGrid(clock, delay=None)
    replies = list(PromptGrid(inner).send_and_receive(_messages(1), timeout=5))  # type: ignore[arg-type]
    assert replies == []
    assert clock.now == pytest.approx(5.0)


def test_other_calls_go_to_the_wrapped_grid(clock: Clock) -> None:
    inner = SlowGrid(clock, delay=0.0)
    grid = PromptGrid(inner)  # type: ignore[arg-type]
    assert list(grid.get_node_ids()) == [1, 2]
    ids = list(grid.push_messages(_messages(1)))
    assert [r.metadata.reply_to_message_id for r in grid.pull_messages(ids)] == ids


class UnevenGrid(SlowGrid):
    """Node ``n`` replies ``n`` seconds after the push."""

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        self.pulls += 1
        return [Message(RecordDict({"c": ConfigRecord({"ok": 1})}), reply_to=self.pushed[i][0])
                for i in message_ids
                if self.clock.now - self.pushed[i][1] >= self.pushed[i][0].metadata.dst_node_id]


def test_the_seconds_until_each_nodes_reply_are_noted_per_call(clock: Clock) -> None:
    grid = PromptGrid(UnevenGrid(clock, delay=0.0))  # type: ignore[arg-type]
    list(grid.send_and_receive(_messages(3), timeout=60))
    assert set(grid.reply_seconds) == {1, 2, 3}  # timings.jsonl: who is slow
    for node, seconds in grid.reply_seconds.items():
        assert node <= seconds <= node * 1.1 + MIN_POLL_S, (node, seconds)
    list(grid.send_and_receive(_messages(1), timeout=60))
    assert set(grid.reply_seconds) == {1}  # the last call's replies only
