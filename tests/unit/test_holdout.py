"""``data.holdout``: the configuration, and a whole run in this process (the real ClientApp over LoopbackGrid)
where the held-out hospital releases no statistics, gets no train message and is reported apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flwr.app import Message

import client_app.app as client
from fedheart import stats as fstats
from fedheart.config import ConfigError, load_config
from fedheart.hospital import load_hospital
from launcher.loopback import LoopbackGrid
from server_app.federation import Federation
from server_app.strategies import build_strategy
from tests.unit.test_malicious_server import Server, hospital

HELD = "switzerland"


@pytest.mark.parametrize(("overrides", "key"), [
    ("data.holdout=nowhere", "data.holdout"),
    ("data.holdout=va aggregation=secagg", "aggregation.mode"),
    ("data.holdout=va privacy=central-fixed privacy.noise_multiplier=1", "privacy.mode"),
    ("data.holdout=va min_replies=4", "min_replies"),
    ("data.holdout=va data.hospitals=[cleveland,hungarian]", "data.holdout"),
])
def test_bad_holdout_settings_are_named(overrides: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(overrides)


def test_holdout_is_off_by_default_and_takes_a_hospital() -> None:
    assert load_config().data.holdout is None
    assert load_config("data.holdout=va").data.holdout == "va"


class Recording(LoopbackGrid):
    """Keeps (node, message type) of every message sent and every reply."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[int, str]] = []
        self.replies: list[Message] = []

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        messages = list(messages)
        self.sent += [(m.metadata.dst_node_id, m.metadata.message_type) for m in messages]
        replies = list(super().send_and_receive(messages, timeout=timeout))
        self.replies += replies
        return replies


def test_the_held_out_hospital_only_evaluates(data_dir: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDHEART_DATA_DIR", str(data_dir))
    monkeypatch.setenv("FEDHEART_OUTPUT_DIR", str(tmp_path / "outputs"))
    cfg = load_config(f"rounds=2 train.local_steps=5 data.holdout={HELD}")
    grid = Recording(client.app, [{"partition-id": i, "num-partitions": 4} for i in range(4)])
    federation = Federation(cfg, grid, build_strategy(cfg), run_id=1)
    history = federation.run()
    node = next(n for n, h in federation.hospitals.items() if h.name == HELD)
    assert {kind for n, kind in grid.sent if n == node} == {"query.stats", "evaluate", "query.baseline"}
    assert sum(kind == "train" for _, kind in grid.sent) == 2 * 3  # the other three, both rounds
    [stats_reply] = [r for r in grid.replies
                     if r.metadata.src_node_id == node and r.metadata.message_type == "query.stats"]
    assert not stats_reply.has_error() and not stats_reply.content.metric_records  # its name only, no statistics
    # the federation's preprocessing: the other three hospitals' training rows alone
    others = [load_hospital(data_dir / f"processed.{k}.data", seed=43, pipeline="project", name=k).train_frame
              for k in cfg.data.hospitals if k != HELD]
    expected = fstats.GlobalStats.from_totals(fstats.combine([fstats.local_stats(f) for f in others]))
    assert federation.preprocessing == expected.to_json()

    summary = json.loads((federation.run_dir.path / "summary.json").read_text())
    assert HELD not in summary["hospitals"] and set(summary["external"]) == {HELD}
    everything = len(load_hospital(data_dir / f"processed.{HELD}.data", seed=43, pipeline="project").table.labels)
    external = summary["external"][HELD]
    assert external["test-rows"] == everything and external["rows"] == "all"
    assert {"brier", "calibration-slope", "calibration-intercept", "auc-ci", "sensitivity", "specificity",
            "adoption", "warnings"} <= set(external)
    internal_rows = sum(int(history.final[k]["num-examples"]) for k in summary["hospitals"])
    assert summary["pooled"]["test-rows"] == summary["federation"]["num-examples"] == internal_rows
    assert "External validation" in (federation.run_dir.path / "summary.md").read_text()


def test_a_held_out_hospital_refuses_to_train(tmp_path: Path, data_dir: Path) -> None:
    h = hospital(tmp_path, data_dir, policy=None, name="va")
    server = Server([h], 1, data_dir, "train.local_steps=5 rounds=2")
    reply = server.train(1, changes={"holdout": "va"})
    assert reply.has_error() and "data.holdout" in reply.error.reason
    assert not server.train(1, changes={"holdout": "cleveland"}).has_error()  # another hospital held out
