"""A malicious server against hospitals with a strict policy: the real ClientApp over LoopbackGrid.

The server below builds its messages as server_app/federation.py does (fedheart.protocol), then asks for
what the hospital's policy forbids. Each test is one attack and asserts the hospital's protection: an
error reply naming the policy key, or the hospital's own values used in place of the server's.
``test_without_a_policy_the_attacks_succeed`` (tests/unit/test_malicious_eval.py) runs some of the same
attacks against a hospital without a policy, where they work: that is what the policy protects. The
evaluation attacks, SuperNode restarts, the lifetime ledger, the audit trail and honest runs are there too.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from flwr.app import Message, RecordDict

import client_app.app as client
from fedheart import stats as fstats
from fedheart.config import AppConfig, load_config
from fedheart.model import build_model, get_weights
from fedheart.preprocess import FLAMBY_DUMMIES, FLAMBY_NUMERIC, Preprocessor, project_preprocessor
from fedheart.protocol import privacy_settings, task_settings, train_settings
from fedheart.safeguard import audit
from fedheart.safeguard.policy import Refused, parse_policy
from fedheart.safeguard.request import check_request
from fedheart.schema import HOSPITALS
from fedheart.tables import read_table
from launcher.loopback import LoopbackGrid
from server_app.records import config_record, to_arrays

Policy = dict[str, dict[str, Any]]
Weights = dict[str, np.ndarray]

STRICT: Policy = {  # the example policy of docs/privacy.md
    "privacy": {"require": "dp-sgd", "max-epsilon-per-run": 1.0, "lifetime-epsilon": 3.0, "delta": 1e-6,
                "min-noise-multiplier": 0.5},
    "data": {"split-seed": 43, "train-fraction": 0.66},
    "release": {"baselines": False, "tracking": False, "evaluation": "dp", "max-evaluations-per-run": 16},
}
PERMISSIVE: Policy = {"privacy": {"require": "none"}, "release": {"baselines": True, "evaluation": "full"}}
DP = "privacy=dp-sgd privacy.epsilon=1.0 train.local_steps=5 rounds=3"  # what the server's config says
PLAIN = "train.local_steps=5 rounds=2"
SERVER_DELTA = 1e-5


def policy_with(policy: Policy, changes: Mapping[str, Any]) -> Policy:
    """``policy`` with ``{"section.key": value}`` changed."""
    out = copy.deepcopy(policy)
    for key, value in changes.items():
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = value
    return out


@dataclass
class Hospital:
    """One hospital's SuperNode: its data file and, unless ``policy`` is None, its policy and state folder."""

    folder: Path
    data: Path
    policy: Policy | None = None
    name: str = "cleveland"

    @property
    def state(self) -> Path:
        return self.folder / "state"

    def node_config(self) -> dict[str, str]:
        """Deployment mode (``data-path``): the hospital's own settings, never the server's."""
        node = {"data-path": str(self.data), "hospital": self.name}
        if self.policy is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / "policy.yaml"
            path.write_text(yaml.safe_dump(self.policy))
            node |= {"policy-path": str(path), "state-dir": str(self.state)}
        return node

    def audit(self) -> list[dict[str, Any]]:
        return list(audit.entries(self.state))


def hospital(tmp: Path, data_dir: Path, policy: Policy | None = STRICT, name: str = "cleveland") -> Hospital:
    filename = next(h.filename for h in HOSPITALS if h.key == name)
    return Hospital(tmp / name, data_dir / filename, policy, name)


@functools.cache
def server_config(overrides: str) -> AppConfig:
    return load_config(overrides)


@functools.cache
def public_preprocessing(data_dir: Path) -> str:
    """Preprocessing statistics the server knows anyway (the public UCI files): it needs no DP release."""
    parts = [fstats.local_stats(read_table(data_dir / h.filename).frame) for h in HOSPITALS]
    return fstats.GlobalStats.from_totals(fstats.combine(parts)).to_json()


def preprocessor(data_dir: Path) -> Preprocessor:
    return project_preprocessor(fstats.GlobalStats.from_json(public_preprocessing(data_dir)))


def initial_weights(data_dir: Path) -> Weights:
    return dict(get_weights(build_model("logreg", preprocessor(data_dir).num_features, seed=0)))


class Server:
    """A server with Flower's Grid to ``hospitals`` (nodes 1..n; or their node configs) in run ``run_id``; it
    sends whatever it likes.

    A new Server with the same run id and hospitals is the same run after every SuperNode restarted: a
    LoopbackGrid gives each node a fresh Context (the SuperNode's memory).
    """

    def __init__(self, hospitals: Sequence[Hospital | Mapping[str, Any]], run_id: int, data_dir: Path,
                 overrides: str = DP) -> None:
        self.cfg = server_config(overrides)
        self.data_dir = data_dir
        nodes = [h.node_config() if isinstance(h, Hospital) else dict(h) for h in hospitals]  # or node configs
        self.grid = LoopbackGrid(client.app, nodes, run_id=run_id)

    def send(self, kind: str, config: Mapping[str, Any], weights: Weights | None = None, node: int = 1) -> Message:
        content = RecordDict({"config": config_record(dict(config))})
        if weights is not None:
            content["arrays"] = to_arrays(weights)
        [reply] = self.grid.send_and_receive([Message(content, dst_node_id=node, message_type=kind)])
        return reply

    def stats(self, changes: Mapping[str, Any] | None = None, node: int = 1) -> Message:
        return self.send("query.stats", {**task_settings(self.cfg), **(changes or {})}, node=node)

    def train_config(self, server_round: int) -> dict[str, Any]:
        return {**task_settings(self.cfg, public_preprocessing(self.data_dir)), **train_settings(self.cfg),
                **privacy_settings(self.cfg, SERVER_DELTA), "server-round": server_round}

    def train(self, server_round: int, weights: Weights | None = None, changes: Mapping[str, Any] | None = None,
              node: int = 1) -> Message:
        return self.send("train", {**self.train_config(server_round), **(changes or {})},
                         weights if weights is not None else initial_weights(self.data_dir), node=node)

    def evaluate(self, weights: Weights | None = None, changes: Mapping[str, Any] | None = None,
                 node: int = 1) -> Message:
        return self.send("evaluate", {**task_settings(self.cfg, public_preprocessing(self.data_dir)),
                                      "server-round": 1, **(changes or {})},
                         weights if weights is not None else initial_weights(self.data_dir), node=node)

    def baseline(self, changes: Mapping[str, Any] | None = None, node: int = 1) -> Message:
        config = {**self.train_config(self.cfg.rounds), "baseline.rounds": self.cfg.rounds,
                  "baseline.local-only": True, **(changes or {})}
        return self.send("query.baseline", config, initial_weights(self.data_dir), node=node)


def accepted(reply: Message) -> RecordDict:
    assert not reply.has_error(), f"the hospital refused or failed: {reply.error.reason}"
    return reply.content


def refused(reply: Message, key: str) -> str:
    """The reply is an error naming policy key ``key``, and nothing else (no statistics, no arrays)."""
    assert reply.has_error(), f"accepted, the hospital sent {list(reply.content)}"
    assert not reply.has_content()
    assert key in reply.error.reason, reply.error.reason
    return reply.error.reason


def stats_of(reply: Message) -> dict[str, float]:
    return dict(accepted(reply)["stats"])


def arrays_of(reply: Message) -> Weights:
    return {k: v.numpy() for k, v in accepted(reply)["arrays"].items()}


def metrics_of(reply: Message) -> dict[str, Any]:
    return dict(accepted(reply)["metrics"])


# -- the attacks --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["query.stats", "query.baseline", "train"])
def test_privacy_mode_none_is_refused(kind: str, tmp_path: Path, data_dir: Path) -> None:
    # baselines allowed, so that the baseline message reaches the privacy check (else release.baselines refuses)
    h = hospital(tmp_path, data_dir, policy_with(STRICT, {"release.baselines": True}))
    server = Server([h], 1, data_dir, overrides=PLAIN)  # privacy.mode=none in every message
    send = {"query.stats": server.stats, "query.baseline": server.baseline, "train": lambda: server.train(1)}
    reason = refused(send[kind](), "privacy.require")
    assert "privacy.mode=none" in reason
    [entry] = h.audit()
    assert (entry["message"], entry["decision"], entry["epsilon"]) == (kind, "refused", 0.0)


@pytest.mark.parametrize("epsilon", [0.0, 5.0], ids=["no-cap", "above-cap"])
@pytest.mark.parametrize("kind", ["query.stats", "train"])
def test_an_epsilon_without_or_above_the_cap_is_refused(kind: str, epsilon: float, tmp_path: Path,
                                                        data_dir: Path) -> None:
    h = hospital(tmp_path, data_dir)
    server = Server([h], 1, data_dir)
    changes = {"privacy.epsilon": epsilon, "privacy.noise-multiplier": 1.0}  # fixed noise: epsilon is only a cap
    reply = server.stats(changes) if kind == "query.stats" else server.train(1, changes=changes)
    refused(reply, "privacy.max-epsilon-per-run")
    assert h.audit()[-1]["lifetime"] == 0.0  # nothing reserved


@pytest.mark.parametrize("key", ["privacy.noise-multiplier", "privacy.stats-noise-multiplier"])
def test_noise_below_the_minimum_is_refused(key: str, tmp_path: Path, data_dir: Path) -> None:
    h = hospital(tmp_path, data_dir)
    server = Server([h], 1, data_dir)
    refused(server.stats({key: 0.1}), "privacy.min-noise-multiplier")
    accepted(server.stats())
    refused(server.train(1, changes={key: 0.1}), "privacy.min-noise-multiplier")


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
def test_a_noise_multiplier_that_is_not_a_number_is_refused(value: float) -> None:
    # Checked on the policy check itself: sent to the real ClientApp, such a noise multiplier passes the floor
    # (nan < 0.5 and inf < 0.5 are false) and Opacus' RDP accountant then loops forever in the hospital, holding
    # its state folder's lock (every later message of that hospital waits): the ClientApp hangs, no test ends.
    config = {**privacy_settings(server_config(DP), SERVER_DELTA), "privacy.noise-multiplier": value}
    try:
        check_request(parse_policy(yaml.safe_dump(STRICT)), "train", config, simulation=False)
    except Refused as exc:
        assert exc.key == "privacy.min-noise-multiplier"
    else:
        pytest.fail(f"BUG: privacy.noise-multiplier={value} passes the policy's noise floor (and hangs the hospital)")


def test_a_noise_seed_does_not_fix_the_noise(tmp_path: Path, data_dir: Path) -> None:
    h = hospital(tmp_path, data_dir)
    seeded = {"privacy.noise-seed": 7}  # the same seed and identical messages in two runs
    runs = [Server([h], run_id, data_dir) for run_id in (1, 2)]
    stats = [stats_of(s.stats(seeded)) for s in runs]
    updates = [arrays_of(s.train(1, changes=seeded)) for s in runs]
    assert stats[0] != stats[1], "the noisy statistics repeat: the server could subtract the noise"
    assert not np.allclose(updates[0]["linear.weight"], updates[1]["linear.weight"])
    for entry in h.audit():
        assert entry["overrides"]["privacy.noise-seed"] == {"requested": 7, "used": -1}


def test_the_hospital_keeps_its_own_split(tmp_path: Path, data_dir: Path) -> None:
    h = hospital(tmp_path, data_dir, PERMISSIVE)  # exact statistics: any other split would show
    honest = stats_of(Server([h], 1, data_dir, PLAIN).stats())
    moved = stats_of(Server([h], 2, data_dir, PLAIN).stats({"split-seed": 7, "train-fraction": 0.5}))
    assert moved == honest
    assert h.audit()[-1]["overrides"] == {"split-seed": {"requested": 7, "used": 43},
                                          "train-fraction": {"requested": 0.5, "used": 0.66}}


def test_a_holdout_cannot_move_the_training_rows_into_exact_evaluations(tmp_path: Path, data_dir: Path) -> None:
    h = hospital(tmp_path, data_dir, PERMISSIVE)  # exact evaluations, of the test rows only
    server = Server([h], 1, data_dir, PLAIN)
    metrics_of(server.evaluate())  # an honest evaluation is accepted
    refused(server.evaluate(changes={"holdout": "cleveland"}), "release.evaluation")
    metrics_of(server.evaluate(changes={"holdout": "va"}))  # another hospital held out: this one as usual


def test_a_second_statistics_query_is_refused(tmp_path: Path, data_dir: Path) -> None:
    h = hospital(tmp_path, data_dir)
    server = Server([h], 1, data_dir)
    accepted(server.stats())
    refused(server.stats(), "statistics")
    refused(Server([h], 1, data_dir).stats(), "statistics")  # nor after the SuperNode restarted
    assert [e["decision"] for e in h.audit()] == ["accepted", "refused", "refused"]


@pytest.mark.parametrize("kind", ["query.baseline", "train", "evaluate"])
def test_baselines_and_tracking_are_refused(kind: str, tmp_path: Path, data_dir: Path) -> None:
    h = hospital(tmp_path, data_dir)
    server = Server([h], 1, data_dir)
    accepted(server.stats())
    tracking = {"tracking.backend": "sagemaker", "tracking.experiment": "stolen", "tracking.region": "eu-west-1"}
    if kind == "query.baseline":
        refused(server.baseline(), "release.baselines")
    elif kind == "train":
        refused(server.train(1, changes=tracking), "release.tracking")
    else:
        refused(server.evaluate(changes=tracking), "release.tracking")


def test_the_flamby_pipeline_is_refused_under_dp(tmp_path: Path, data_dir: Path) -> None:
    # pipeline=flamby standardises every row with the hospital's exact training mean and std
    # (fedheart.preprocess.flamby_preprocessor), which no DP release covers: DP-SGD's per-row sensitivity and
    # the DP evaluation's no longer hold for the training rows. The server's check_config refuses it with dp-sgd;
    # a hospital with a dp-sgd policy must refuse it too.
    h = hospital(tmp_path, data_dir)
    server = Server([h], 1, data_dir)
    accepted(server.stats())
    flamby = {"pipeline": "flamby", "preprocessing": ""}
    weights = dict(get_weights(build_model("logreg", len(FLAMBY_NUMERIC) + sum(map(len, FLAMBY_DUMMIES.values())))))
    for reply in (server.train(1, weights, flamby), server.evaluate(weights, flamby)):
        assert reply.has_error(), (f"BUG: a dp-sgd policy accepts pipeline=flamby in a {reply.metadata.message_type} "
                                   "message (features standardised by the exact training mean and std)")
        assert "pipeline" in reply.error.reason


def test_errors_carry_no_data_values(tmp_path: Path, data_dir: Path) -> None:
    rows = (data_dir / "processed.cleveland.data").read_text().splitlines()
    fields = rows[5].split(",")
    fields[4] = "987654"  # chol
    bad = hospital(tmp_path, data_dir)
    bad.data = tmp_path / "cleveland.data"
    bad.data.write_text("\n".join([*rows[:5], ",".join(fields), *rows[6:]]) + "\n")
    reply = Server([bad], 1, data_dir).stats()
    assert reply.has_error() and not reply.has_content()
    assert "987654" not in reply.error.reason
    assert "'chol'" in reply.error.reason and "1 line" in reply.error.reason
    assert "987654" not in (bad.state / audit.AUDIT_FILE).read_text()
