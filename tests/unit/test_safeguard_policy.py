"""The hospital's policy file and the check of every request against it (fedheart.safeguard)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedheart.safeguard.policy import Policy, PolicyError, Refused, load_policy, parse_policy, policy_keys
from fedheart.safeguard.request import check_request

HASH = "ab" * 32
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = f"""\
# A hospital's policy: every key, at values a little looser than the defaults.
privacy:
  require: dp-sgd
  max-epsilon-per-run: 2.0
  lifetime-epsilon: 6
  delta: 1.0e-6
  min-noise-multiplier: 0.8
  seeded-noise: true
data:
  split-seed: 7
  train-fraction: 0.7
release:
  baselines: true
  tracking: true
  evaluation: full
  max-evaluations-per-run: 4
  evaluation-noise-multiplier: 30
approved-apps: ["{HASH.upper()}"]
"""
STRICT = Policy()
DP: dict[str, Any] = {"privacy.mode": "dp-sgd", "privacy.epsilon": 1.0, "privacy.noise-multiplier": 0.0,
                      "privacy.stats-noise-multiplier": 20.0, "privacy.noise-seed": -1, "privacy.rounds": 3,
                      "privacy.max-grad-norm": 1.0, "split-seed": 43, "train-fraction": 0.66,
                      "tracking.backend": "local"}


def refused(policy: Policy, kind: str, config: dict[str, Any], *, simulation: bool = False,
            evaluations_done: int = 0) -> Refused:
    with pytest.raises(Refused) as info:
        check_request(policy, kind, config, simulation=simulation, evaluations_done=evaluations_done)
    return info.value


def test_example_policy_parses_every_key(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE)
    named = {f"{s}.{k}" if isinstance(body, dict) else s for s, body in data.items()
             for k in (body if isinstance(body, dict) else [None])}
    assert named == set(policy_keys())  # the example holds every key a policy may hold
    path = tmp_path / "policy.yaml"
    path.write_text(EXAMPLE)
    policy = load_policy(path)
    assert policy == Policy(path=str(path), require="dp-sgd", max_epsilon_per_run=2.0, lifetime_epsilon=6.0,
                            delta=1e-6, min_noise_multiplier=0.8, seeded_noise=True, split_seed=7,
                            train_fraction=0.7, baselines=True, tracking=True, evaluation="full",
                            max_evaluations_per_run=4, evaluation_noise_multiplier=30.0, approved_apps=(HASH,))


SHIPPED = [*(str(p.relative_to(REPO)) for p in sorted(REPO.glob("k8s/overlays/*/policy.yaml"))), "docs/privacy.md"]


def shipped_policy(where: str) -> str:
    """A policy example the repository ships: a k8s overlay's file, or the YAML block of docs/privacy.md."""
    text = (REPO / where).read_text()
    if where.endswith(".md"):
        text = text[text.index("## A hospital decides"):]
        text = text[text.index("```yaml\n") + 8:]
        text = text[:text.index("```")]
    return text


@pytest.mark.parametrize("where", SHIPPED)
def test_shipped_example_policies_parse(where: str) -> None:
    policy = parse_policy(shipped_policy(where), where)
    assert policy.dp_required and policy.max_epsilon_per_run <= policy.lifetime_epsilon
    assert not policy.baselines and not policy.tracking and not policy.seeded_noise


@pytest.mark.parametrize("text", ["", "# nothing set\n", "privacy: {}\n"])
def test_empty_policy_is_the_strict_default(text: str) -> None:
    policy = parse_policy(text, "empty.yaml")
    assert replace(policy, path=STRICT.path) == STRICT
    assert policy.dp_required and not policy.baselines and not policy.tracking and not policy.seeded_noise
    assert (policy.max_epsilon_per_run, policy.lifetime_epsilon, policy.delta) == (1.0, 3.0, 1e-5)


@pytest.mark.parametrize(("text", "line", "key", "value"), [
    ("privacy:\n  delta: 1.0e-6\nsecrets:\n  x: 1\n", 3, "secrets", "unknown section"),
    ("privacy:\n  delta: 1.0e-6\n  epsilon: 3\n", 3, "privacy.epsilon", "unknown key"),
    ("data:\n  split-seed: 1\nrelease:\n  evaluation: partial\n", 4, "release.evaluation", "'partial'"),
    ("privacy:\n  require: dp-sgd\n  delta: 2\n", 3, "privacy.delta", "2"),
    ("privacy:\n  max-epsilon-per-run: one\n", 2, "privacy.max-epsilon-per-run", "'one'"),
    ("privacy:\n  lifetime-epsilon: 1\n  max-epsilon-per-run: 2.5\n", 3, "privacy.max-epsilon-per-run", "2.5"),
    ("privacy:\n  min-noise-multiplier: 0\n", 2, "privacy.min-noise-multiplier", "0"),
    ("release:\n  baselines: yes please\n", 2, "release.baselines", "'yes please'"),
    ("data:\n  split-seed: 1.5\n", 2, "data.split-seed", "1.5"),
    ("data:\n  split-seed: 1\napproved-apps: [abc]\n", 3, "approved-apps", "abc"),
])
def test_bad_policy_names_file_line_key_and_value(tmp_path: Path, text: str, line: int, key: str,
                                                  value: str) -> None:
    path = tmp_path / "hospital-policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert str(path) in message
    assert f"line {line}," in message
    assert f"key {key}" in message
    assert value in message


def test_unreadable_policy_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
    with pytest.raises(PolicyError, match="mapping"):
        parse_policy("- a\n- b\n", "list.yaml")


@pytest.mark.parametrize("mode", ["none", "central-fixed", "central-adaptive"])
@pytest.mark.parametrize("kind", ["query.stats", "train", "query.baseline"])
def test_weaker_privacy_mode_is_refused(kind: str, mode: str) -> None:
    policy = replace(STRICT, baselines=True)  # so a baseline gets as far as the privacy check
    error = refused(policy, kind, {**DP, "privacy.mode": mode})
    assert error.key == "privacy.require"
    assert mode in str(error.requested) and error.allowed == "dp-sgd"


def test_no_dp_is_accepted_when_the_policy_does_not_require_it() -> None:
    decision = check_request(replace(STRICT, require="none"), "train", {"privacy.mode": "none"}, simulation=False)
    assert decision.config["privacy.mode"] == "none"


@pytest.mark.parametrize(("epsilon", "no_cap"), [(0.0, True), (None, True), (1.5, False), (100.0, False)])
def test_epsilon_without_cap_or_above_the_cap_is_refused(epsilon: float | None, no_cap: bool) -> None:
    config = {**DP, "privacy.epsilon": epsilon}
    for kind in ("query.stats", "train"):
        error = refused(STRICT, kind, config)
        assert error.key == "privacy.max-epsilon-per-run"
        assert ("no cap" in str(error.requested)) == no_cap
    check_request(STRICT, "train", {**DP, "privacy.epsilon": 1.0}, simulation=False)  # at the cap: accepted


@pytest.mark.parametrize(("key", "z"), [("privacy.noise-multiplier", 0.3), ("privacy.stats-noise-multiplier", 0.3),
                                        ("privacy.stats-noise-multiplier", 0.0)])
def test_noise_below_the_minimum_is_refused(key: str, z: float) -> None:
    error = refused(STRICT, "train", {**DP, key: z})
    assert error.key == "privacy.min-noise-multiplier" and key in str(error.requested)


def test_calibrated_noise_and_noise_at_the_minimum_are_accepted() -> None:
    for z in (0.0, 0.5, 2.0):  # 0: calibrated to the budget later
        check_request(STRICT, "train", {**DP, "privacy.noise-multiplier": z}, simulation=False)


def test_release_switches_refuse_baselines_tracking_and_evaluation() -> None:
    assert refused(STRICT, "query.baseline", DP).key == "release.baselines"
    for kind in ("train", "evaluate"):
        assert refused(STRICT, kind, {**DP, "tracking.backend": "sagemaker"}).key == "release.tracking"
    check_request(replace(STRICT, tracking=True), "train", {**DP, "tracking.backend": "sagemaker"},
                  simulation=False)
    assert refused(replace(STRICT, evaluation="none"), "evaluate", DP).key == "release.evaluation"


def test_evaluations_beyond_the_per_run_maximum_are_refused() -> None:
    policy = replace(STRICT, max_evaluations_per_run=3)
    for done in range(3):
        check_request(policy, "evaluate", DP, simulation=False, evaluations_done=done)
    error = refused(policy, "evaluate", DP, evaluations_done=3)
    assert error.key == "release.max-evaluations-per-run" and error.allowed == 3


def test_hospital_split_and_train_fraction_replace_the_servers() -> None:
    decision = check_request(STRICT, "train", {**DP, "split-seed": 7, "train-fraction": 0.9}, simulation=False)
    assert decision.config["split-seed"] == 43 and decision.config["train-fraction"] == 0.66
    assert decision.overrides["split-seed"] == {"requested": 7, "used": 43}
    assert decision.overrides["train-fraction"] == {"requested": 0.9, "used": 0.66}
    same = check_request(STRICT, "train", DP, simulation=False)
    assert "split-seed" not in same.overrides and "train-fraction" not in same.overrides


@pytest.mark.parametrize(("asked", "used"), [(None, 1e-5), (1e-3, 1e-5), (1e-5, 1e-5), (1e-7, 1e-7)])
def test_delta_is_the_smaller_of_policy_and_server(asked: float | None, used: float) -> None:
    config = dict(DP) if asked is None else {**DP, "privacy.delta": asked}
    decision = check_request(STRICT, "train", config, simulation=False)
    assert decision.config["privacy.delta"] == used
    assert ("privacy.delta" in decision.overrides) == (asked != used)


@pytest.mark.parametrize(("simulation", "seeded", "kept"), [(False, True, False), (False, False, False),
                                                           (True, False, False), (True, True, True)])
def test_noise_seed_is_kept_only_in_a_seeded_simulation(simulation: bool, seeded: bool, kept: bool) -> None:
    policy = replace(STRICT, seeded_noise=seeded)
    for kind in ("query.stats", "train"):
        decision = check_request(policy, kind, {**DP, "privacy.noise-seed": 5}, simulation=simulation)
        assert decision.config["privacy.noise-seed"] == (5 if kept else -1)
        assert (decision.overrides.get("privacy.noise-seed") == {"requested": 5, "used": -1}) == (not kept)
