"""What leaves a hospital: every reply of the real ClientApp over a whole run, inspected.

A LoopbackGrid serialises each message as Flower does and hands it to client_app.app in this
process; the grid below keeps every reply. A reply may hold only: the model's arrays (train), the
sufficient statistics with exactly fedheart.stats.stat_keys() (stats query), the hospital's name
(stats, train, evaluate),
and scalar metrics. The one documented exception: ``hist-pos`` / ``hist-neg``, 100-bin counts of
predicted probabilities over the test rows (pooled AUC and ROC curves; docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import Message

import client_app.app as client
from fedheart.config import load_config
from fedheart.stats import stat_keys
from launcher.loopback import LoopbackGrid
from server_app.federation import Federation
from server_app.strategies import build_strategy

HISTOGRAMS = ("hist-pos", "hist-neg")
BINS = 100


class CapturingGrid(LoopbackGrid):
    """Keeps every reply a hospital sends."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.replies: list[Message] = []

    def send_and_receive(self, messages, *, timeout=None):  # type: ignore[no-untyped-def]
        replies = list(super().send_and_receive(messages, timeout=timeout))
        self.replies += replies
        return replies


@pytest.fixture(autouse=True)
def _env(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDHEART_DATA_DIR", str(data_dir))
    monkeypatch.setenv("FEDHEART_OUTPUT_DIR", str(tmp_path / "outputs"))


def _scalar(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@pytest.mark.parametrize("overrides", ["", "privacy=dp-sgd privacy.epsilon=5"], ids=["plain", "dp-sgd"])
def test_replies_hold_only_weights_sufficient_statistics_and_scalar_metrics(overrides: str) -> None:
    cfg = load_config(f"{overrides} rounds=2 train.local_steps=5")
    grid = CapturingGrid(client.app, [{"partition-id": i, "num-partitions": 4} for i in range(4)])
    federation = Federation(cfg, grid, build_strategy(cfg), run_id=1)
    federation.run()
    shapes = {k: v.shape for k, v in federation.initial_weights().items()}
    kinds: dict[str, int] = {}
    for reply in grid.replies:
        kind = reply.metadata.message_type
        kinds[kind] = kinds.get(kind, 0) + 1
        assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
        content = reply.content
        assert set(content.array_records) == ({"arrays"} if kind == "train" else set()), kind
        if kind == "train":
            arrays = {k: v.numpy() for k, v in content.array_records["arrays"].items()}
            assert {k: a.shape for k, a in arrays.items()} == shapes, "train reply: only the model's arrays"
        configs = {name: dict(rec) for name, rec in content.config_records.items()}
        named = kind in ("query.stats", "train", "evaluate")  # the hospital's name, nothing else
        assert configs == ({"info": {"hospital": configs["info"]["hospital"]}} if named else {}), kind
        for name, record in content.metric_records.items():
            values = dict(record)
            if kind == "query.stats":
                assert name == "stats" and list(values) == stat_keys(), "exactly the sufficient statistics"
            for key, value in values.items():
                if kind == "evaluate" and key in HISTOGRAMS:
                    assert isinstance(value, list) and len(value) == BINS and all(_scalar(c) for c in value)
                    continue
                assert _scalar(value), f"{kind} reply: {name}[{key!r}] is not a scalar: {value!r}"
    assert kinds == {"query.stats": 4, "train": 4 * 2, "evaluate": 4 * 2, "query.baseline": 4}, kinds
    evaluations = [dict(r.content.metric_records["metrics"]) for r in grid.replies
                   if r.metadata.message_type == "evaluate"]
    for metrics in evaluations:  # the histograms are counts over the hospital's test rows, nothing finer
        assert all(float(c).is_integer() and c >= 0 for k in HISTOGRAMS for c in metrics[k])
    assert len(federation.hospitals) == 4
