"""A malicious server, continued: crafted evaluation weights, too many evaluations, a SuperNode killed
mid-run, a second run on the same data, an edited audit line; an honest FedAvg run that still completes
under a policy; and ``test_without_a_policy_the_attacks_succeed``: the attacks of both files against a
hospital without a policy, where they work (what the policy protects).

The server and hospitals are those of tests/unit/test_malicious_server.py (the real ClientApp over
LoopbackGrid, deployment-mode node configs unless a test says otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fedheart import stats as fstats
from fedheart.hospital import load_hospital
from fedheart.preprocess import Preprocessor
from fedheart.safeguard import audit
from fedheart.safeguard.budget import books
from fedheart.schema import HOSPITALS
from fedheart_cli.main import main as fedheart
from server_app.federation import Federation
from server_app.strategies import build_strategy
from tests.unit.test_malicious_server import (
    DP,
    PERMISSIVE,
    PLAIN,
    STRICT,
    Hospital,
    Server,
    Weights,
    accepted,
    hospital,
    metrics_of,
    policy_with,
    preprocessor,
    refused,
    stats_of,
)

EVALUATIONS = 4


# -- crafted evaluation weights -----------------------------------------------------------------------------
PROBE = "sex"  # men have sex = 1: a large weight on it sends every man to score ~1, every woman to ~0


def probe_weights(pre: Preprocessor, feature: str = PROBE, scale: float = 50.0) -> Weights:
    weight = np.zeros((1, pre.num_features), dtype=np.float32)
    weight[0, pre.feature_names.index(feature)] = scale
    return {"linear.weight": weight, "linear.bias": np.zeros(1, dtype=np.float32)}


def read_probe(metrics: Mapping[str, Any]) -> np.ndarray:
    """(men among the positive test rows, men among the negative ones) read off the score histograms."""
    half = len(metrics["hist-pos"]) // 2
    return np.array([sum(metrics["hist-pos"][half:]), sum(metrics["hist-neg"][half:])], dtype=float)


def true_probe(h: Hospital) -> np.ndarray:
    """The same two counts from the hospital's test rows (its own split)."""
    data = load_hospital(h.data, seed=43, pipeline="project", train_fraction=0.66, name=h.name)
    men = data.test_frame[PROBE].to_numpy() == 1
    return np.array([(men & (data.y_test == 1)).sum(), (men & (data.y_test == 0)).sum()], dtype=float)


@pytest.mark.parametrize("release", ["full", "dp"])
def test_crafted_weights_read_a_feature_only_without_dp(release: str, tmp_path: Path, data_dir: Path) -> None:
    """A large weight on ``sex``, zeros elsewhere: the score histograms then count the men per class."""
    h = hospital(tmp_path, data_dir, policy_with(STRICT, {"release.evaluation": release}))
    server = Server([h], 1, data_dir)
    truth = true_probe(h)
    errors = [np.abs(read_probe(metrics_of(server.evaluate(probe_weights(preprocessor(data_dir))))) - truth).mean()
              for _ in range(EVALUATIONS)]
    error = float(np.mean(errors))
    print(f"release.evaluation={release}: men per class {truth.tolist()}, reconstruction error {error:.2f} rows "
          f"(mean over both classes and {EVALUATIONS} evaluations)")
    if release == "full":
        assert error < 1, "exact histograms: the crafted weights read the feature exactly"
    else:
        assert error > 3, f"DP evaluation: the reconstruction should be noise, error {error:.2f} rows"
        assert h.audit()[-1]["epsilon"] > 0, "each DP evaluation is charged to the run's ledger"


def test_the_17th_evaluation_is_refused(tmp_path: Path, data_dir: Path) -> None:
    h = hospital(tmp_path, data_dir)
    server = Server([h], 1, data_dir)
    for _ in range(16):
        accepted(server.evaluate())
    refused(server.evaluate(), "release.max-evaluations-per-run")
    refused(Server([h], 1, data_dir).evaluate(), "release.max-evaluations-per-run")  # counted on disk


def test_a_restarted_supernode_continues_from_the_ledger(tmp_path: Path, data_dir: Path) -> None:
    h = hospital(tmp_path, data_dir)
    before = Server([h], 7, data_dir)
    accepted(before.stats())
    rounds = [metrics_of(before.train(r)) for r in (1, 2)]
    after = Server([h], 7, data_dir)  # killed and restarted: a fresh Context, the same run and state folder
    rounds.append(metrics_of(after.train(3)))
    epsilons = [m["epsilon"] for m in rounds]
    assert epsilons[0] < epsilons[1] < epsilons[2] <= 1.0, epsilons
    # the noise calibrated in round 1 for all three rounds, not recalibrated to spend the whole budget in round 3
    assert len({m["noise-multiplier"] for m in rounds}) == 1, rounds
    [book] = books(h.state)
    assert book.runs["7"].epsilon == epsilons[2]


def test_a_second_run_on_the_same_data_is_refused_past_the_lifetime_budget(
        tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = hospital(tmp_path, data_dir, policy_with(STRICT, {"privacy.lifetime-epsilon": 1.5}))
    accepted(Server([h], 101, data_dir).stats())  # run A reserves its whole cap, 1.0
    refused(Server([h], 102, data_dir).stats(), "privacy.lifetime-epsilon")
    assert fedheart(["budget", str(h.state)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("10")]
    assert [(r[0], r[2]) for r in rows] == [("101", "1.0000")], out  # run A alone, its 1.0 reserved
    assert "left 0.5000 of 1.5" in out


def test_a_simulation_server_cannot_rename_a_hospital_into_a_fresh_ledger(
        tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # In a simulation the state folder is $FEDHEART_STATE_ROOT/<hospital name>, and the name comes from the
    # server's data.hospitals: listing cleveland twice names partition 0 "cleveland-0", a new folder.
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(policy_with(STRICT, {"privacy.lifetime-epsilon": 1.5})))
    monkeypatch.setenv("FEDHEART_POLICY", str(policy))
    monkeypatch.setenv("FEDHEART_STATE_ROOT", str(tmp_path / "state"))
    monkeypatch.setenv("FEDHEART_DATA_DIR", str(data_dir))
    simulated = [{"partition-id": 0, "num-partitions": 4}]
    listed = ["cleveland,hungarian,switzerland,va", "cleveland,cleveland,switzerland,va"]
    replies = []
    for run_id, hospitals in enumerate(listed, start=1):
        replies.append(Server(simulated, run_id, data_dir).stats({"hospitals": hospitals}))
    accepted(replies[0])
    assert replies[1].has_error(), ("BUG: a simulation server gave the same data file a fresh lifetime ledger, "
                                    f"state folders {sorted(p.name for p in (tmp_path / 'state').iterdir())}")


def test_an_edited_audit_line_is_named(tmp_path: Path, data_dir: Path) -> None:
    h = hospital(tmp_path, data_dir)
    server = Server([h], 1, data_dir)
    accepted(server.stats())
    refused(server.stats(), "statistics")
    refused(server.baseline(), "release.baselines")
    assert audit.verify(h.state)[0]
    trail = h.state / audit.AUDIT_FILE
    lines = trail.read_text().splitlines()
    assert '"decision":"refused"' in lines[1]
    lines[1] = lines[1].replace('"decision":"refused"', '"decision":"accepted"')  # hide the second query
    trail.write_text("\n".join(lines) + "\n")
    ok, message = audit.verify(h.state)
    assert not ok and "line 2:" in message, message
    assert fedheart(["audit", "verify", str(h.state)]) == 1


def test_honest_fedavg_completes_under_a_policy(tmp_path: Path, data_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDHEART_DATA_DIR", str(data_dir))
    monkeypatch.setenv("FEDHEART_OUTPUT_DIR", str(tmp_path / "outputs"))
    hospitals = [hospital(tmp_path, data_dir, PERMISSIVE, h.key) for h in HOSPITALS]
    server = Server(hospitals, 1, data_dir, PLAIN)
    federation = Federation(server.cfg, server.grid, build_strategy(server.cfg), run_id=1)
    history = federation.run()
    assert history.last_round == 2
    assert sorted(history.final) == sorted(h.key for h in HOSPITALS)
    assert (federation.run_dir.path / "summary.json").is_file()
    for h in hospitals:
        ok, message = audit.verify(h.state)
        assert ok, message
        entries = h.audit()
        assert [e["message"] for e in entries] == ["query.stats", *["train", "evaluate"] * 2, "query.baseline"]
        assert {e["decision"] for e in entries} == {"accepted"}


def test_an_honest_dp_run_completes_under_the_strict_policy(tmp_path: Path, data_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDHEART_DATA_DIR", str(data_dir))
    monkeypatch.setenv("FEDHEART_OUTPUT_DIR", str(tmp_path / "outputs"))
    hospitals = [hospital(tmp_path, data_dir, STRICT, h.key) for h in HOSPITALS]
    server = Server(hospitals, 1, data_dir, DP)
    history = Federation(server.cfg, server.grid, build_strategy(server.cfg), run_id=1).run()
    assert history.last_round == 3
    for h in hospitals:
        assert audit.verify(h.state)[0]
        decisions = [(e["message"], e["decision"]) for e in h.audit()]
        assert decisions[-1] == ("query.baseline", "refused")  # the only refusal: baselines are not released
        assert all(d == "accepted" for _, d in decisions[:-1])
        assert 0 < h.audit()[-1]["epsilon"] <= 1.0


def test_without_a_policy_the_attacks_succeed(tmp_path: Path, data_dir: Path) -> None:
    """What the policy protects: the same attacks against a hospital without one (the server is trusted)."""
    h = hospital(tmp_path, data_dir, policy=None)
    exact = fstats.local_stats(load_hospital(h.data, seed=43, pipeline="project").train_frame)
    plain = Server([h], 1, data_dir, PLAIN)
    assert stats_of(plain.stats()) == exact  # privacy.mode=none: the exact statistics
    assert stats_of(plain.stats()) == exact  # and again in the same run
    seeded = {"privacy.noise-seed": 7}
    noisy = [stats_of(Server([h], run_id, data_dir).stats(seeded)) for run_id in (2, 3)]
    assert noisy[0] == noisy[1]  # a fixed seed repeats the noise: subtract it, and the exact sums remain
    assert stats_of(Server([h], 4, data_dir, PLAIN).stats({"split-seed": 7})) != exact  # rows moved
    probe = Server([h], 5, data_dir, DP).evaluate(probe_weights(preprocessor(data_dir)))
    assert np.array_equal(read_probe(metrics_of(probe)), true_probe(h))  # crafted weights read the test rows
