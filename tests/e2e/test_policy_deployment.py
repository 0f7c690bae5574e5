"""Each hospital's own policy on the real deployment (the session fixture ``deployment`` of
tests/e2e/conftest.py: TLS, authenticated SuperNodes, one policy file and state folder per hospital).

The hospitals switch their policy files to the strict example of docs/privacy.md, still approving the
app (a hospital's launcher and its ClientApp read the file for every message, each run in a process
of its own), then two runs are submitted:

1. an attack: ``privacy=none``. Every hospital refuses its statistics query (``privacy.require``),
   so the run fails at once with that reason, and nothing is charged to any budget;
2. ``privacy=dp-sgd privacy.epsilon=1 rounds=2``: accepted (the hospital's own delta 1e-6 in place of
   the server's), completed within each hospital's run cap, its baselines refused
   (``release.baselines``), every audit trail intact.

The permissive policy is restored whatever happens, for the modules that share the deployment.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fedheart.safeguard import audit
from fedheart.safeguard.budget import books
from launcher.deploy import COMPLETED, Deployment
from tests.e2e.conftest import PERMISSIVE_POLICY, approving, write_policy

pytestmark = pytest.mark.e2e

STRICT_POLICY = """\
privacy:
  require: dp-sgd
  max-epsilon-per-run: 1.0
  lifetime-epsilon: 3.0
  delta: 1.0e-6
  min-noise-multiplier: 0.5
data:
  split-seed: 43
  train-fraction: 0.66
release:
  baselines: false
  tracking: false
  evaluation: dp
  max-evaluations-per-run: 16
"""
RUN_TIMEOUT = 900  # s: a DP-SGD round of four fresh ClientApp processes takes ~40-90 s on the shared 2 cores


def _lines(deployment: Deployment, name: str, run_id: str) -> list[dict[str, Any]]:
    return list(audit.entries(deployment.state_dirs[name], run_id))


def test_strict_hospital_policies_refuse_an_attack_and_bound_a_dp_run(deployment: Deployment,
                                                                     approved_app: str) -> None:
    deployment.wait_online()
    try:
        for path in deployment.policies.values():
            write_policy(path, approving(STRICT_POLICY, approved_app))  # the same app, stricter releases
        attack_id, attack = deployment.run(["privacy=none", "rounds=2", "output.run_name=e2e-policy-attack"],
                                           stream=False, echo=None, timeout=RUN_TIMEOUT)
        run_id, record = deployment.run(["privacy=dp-sgd", "privacy.epsilon=1", "rounds=2",
                                         "output.run_name=e2e-policy-strict"],
                                        stream=False, echo=None, timeout=RUN_TIMEOUT)
        report, intact = deployment.safeguards(run_id)  # what launcher.deploy prints, under the strict policy
    finally:
        for path in deployment.policies.values():
            write_policy(path, approving(PERMISSIVE_POLICY, approved_app))
    print("\n" + "\n".join(report))

    # 1. The attack: refused by every hospital at its first message; the run fails fast, saying why.
    assert attack["status"] == "finished:failed", attack
    details = str(attack.get("status-details"))
    assert "privacy.require" in details and "statistics" in details, details
    assert not (deployment.run_dir(attack_id, "e2e-policy-attack") / "metrics.jsonl").exists()
    for name, state in deployment.state_dirs.items():
        lines = _lines(deployment, name, attack_id)
        assert [(e["message"], e["decision"]) for e in lines] == [("query.stats", "refused")], (name, lines)
        assert "privacy.require" in lines[0]["reason"] and "privacy.mode=none" in lines[0]["reason"]
        assert all(attack_id not in book.runs for book in books(state)), f"{name}: the refused run was charged"

    # 2. The DP-SGD run within the policy: completed, audited, bounded, no baselines released.
    assert record["status"] == COMPLETED, record.get("status-details")
    assert intact, report
    for name, state in deployment.state_dirs.items():
        ok, message = audit.verify(state)
        assert ok, message
        lines = _lines(deployment, name, run_id)
        accepted = sorted(e["message"] for e in lines if e["decision"] == "accepted")
        assert accepted == ["evaluate", "evaluate", "query.stats", "train", "train"], (name, lines)
        refused = [e for e in lines if e["decision"] == "refused"]
        assert [e["message"] for e in refused] == ["query.baseline"], (name, lines)
        assert "release.baselines" in refused[0]["reason"], refused[0]
        for entry in lines:
            if entry["message"] in ("query.stats", "train"):  # the hospital's delta, whatever the server sent
                assert entry["overrides"]["privacy.delta"]["used"] == 1e-6, entry
        (book,) = books(state)
        spent = book.runs[run_id]
        assert spent.reserved == 1.0 and spent.delta == 1e-6, book.summary()
        assert 0 < spent.epsilon <= 1.0 + 1e-9, book.summary()
        assert spent.statistics and spent.evaluations == 2, book.summary()
        assert lines[-1]["lifetime"] <= 3.0
    budget_lines = [line for line in report if ": budget (" in line]
    assert len(budget_lines) == len(deployment.state_dirs), report
    assert all(f"run {run_id} spent epsilon " in line and "of 1 reserved (delta 1e-06)" in line
               and "lifetime epsilon charged 1.0000 of 3 (2.0000 left)" in line for line in budget_lines), report
    summary = json.loads((deployment.run_dir(run_id, "e2e-policy-strict") / "summary.json").read_text())
    assert summary["rounds"] == 2
    for name, row in summary["hospitals"].items():
        baselines = {k: row[k] for k in ("majority-accuracy", "local-accuracy", "local-auc")}
        assert baselines == dict.fromkeys(baselines), (name, row)
