"""Fixtures shared by the end-to-end modules: one real local deployment for the whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedheart.schema import HOSPITALS
from launcher.deploy import Deployment
from launcher.fab import app_hash, snapshot_app
from launcher.flower import REPO_ROOT

# What the shared deployment's hospitals run under unless a test says otherwise: a policy that lets
# every other test (plain runs, baselines, faults and resume) behave as without one, while each
# message still passes the hospital's gate, ledger and audit trail. Its data section is the strict
# default (split seed 43, train fraction 0.66), which is also the app's default configuration.
PERMISSIVE_POLICY = """\
privacy: {require: none, max-epsilon-per-run: 10, lifetime-epsilon: 1000, seeded-noise: false}
release: {baselines: true, tracking: true, evaluation: full, max-evaluations-per-run: 1000}
"""


def approving(policy: str, fab_hash: str) -> str:
    """``policy`` with ``approved-apps: [fab_hash]``: the hospital's launcher runs that app, and only it."""
    return policy + f"approved-apps: [{fab_hash}]\n"


def write_policy(path: Path, text: str) -> None:
    """Replace a hospital's policy file atomically: a SuperNode reads it for every message, and must
    never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture(scope="session")
def app_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The app's bundled files as they were when the session started (launcher.fab.snapshot_app): what
    the shared deployment's runs submit, so that editing the checkout during a session changes neither
    the code that runs nor its hash."""
    return snapshot_app(REPO_ROOT, tmp_path_factory.mktemp("app") / "app")


@pytest.fixture(scope="session")
def approved_app(app_snapshot: Path) -> str:
    """The hash of the app the deployment's runs submit (:func:`app_snapshot`), the one every hospital's
    policy approves; any other bundle is refused by every hospital's launcher."""
    return app_hash(app_snapshot)


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, app_snapshot: Path,
               approved_app: str) -> Iterator[Deployment]:
    """A TLS SuperLink with SuperNode authentication and one SuperNode per UCI hospital, each with the
    hospital's launcher beside it (launcher.deploy.Deployment, ``launcher="hospital"``), shared by
    tests/e2e/test_deployment.py, test_faults.py and test_policy_deployment.py.

    Every hospital has its own policy file (``deployment.policies[name]``, :data:`PERMISSIVE_POLICY`
    approving :func:`approved_app`) and state folder (``deployment.state_dirs[name]``: lifetime ledger
    and audit trail). A module that injects faults or changes a policy must leave it as it found it:
    every SuperNode and launcher running, every SuperNode online, every policy file permissive.
    """
    work = tmp_path_factory.mktemp("deployment")
    files = {h.key: data_dir / h.filename for h in HOSPITALS}
    policies = {h.key: work / "policies" / f"{h.key}.yaml" for h in HOSPITALS}
    for path in policies.values():
        write_policy(path, approving(PERMISSIVE_POLICY, approved_app))
    with Deployment(work / "state", files, work / "outputs", policy=policies,
                    state_root=work / "hospital-state", launcher="hospital", app_dir=app_snapshot) as deployed:
        assert deployed.app_hash == approved_app
        yield deployed
