"""launcher.deploy / launcher.simulate ``--policy FILE --state-root DIR``: the policy is checked before
anything starts, every hospital is given its policy file and state folder, the launchers say who is
trusted, the deployment's hospital launcher needs a policy and names the app hash it submits, and the
end of the output shows each hospital's audit verification and budget.

No Flower process is started here: ``Deployment.start``/``run`` and ``run_simulation`` are replaced.
"""

from __future__ import annotations

import signal
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import launcher.deploy_cli as deploy
import launcher.simulate as simulate
from fedheart.safeguard import audit
from fedheart.safeguard.budget import BudgetBook
from launcher.deploy import COMPLETED, NO_POLICY, Deployment
from launcher.fab import app_hash
from launcher.flower import REPO_ROOT, FlowerError, SuperLink
from launcher.safeguards import safeguard_report

GOOD = "privacy: {require: none, max-epsilon-per-run: 2, lifetime-epsilon: 5}\nrelease: {baselines: true}\n"
BAD = "privacy:\n  require: dp-sgd\nrelease:\n  baseline: false\n"  # release.baselines misspelt, line 4
HOSPITALS = ["cleveland", "va"]


@pytest.fixture(autouse=True)
def signal_handlers() -> Iterator[None]:
    """The launchers' main() installs SIGTERM/SIGINT handlers: give pytest its own back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    return path


@pytest.fixture
def deploy_args(tmp_path: Path, data_dir: Path) -> list[str]:
    return ["--data-dir", str(data_dir), "--workdir", str(tmp_path / "work"), "--output-dir", str(tmp_path / "out"),
            f"data.hospitals=[{','.join(HOSPITALS)}]", f"min_hospitals={len(HOSPITALS)}", "min_replies=1"]


@pytest.fixture
def no_start(monkeypatch: pytest.MonkeyPatch) -> list[Deployment]:
    """Deployment.start records the deployment and fails as if a process had not come up."""
    started: list[Deployment] = []

    def start(self: Deployment, timeout: float = 180) -> Deployment:
        started.append(self)
        raise FlowerError("stopped by the test before any process starts")

    monkeypatch.setattr(Deployment, "start", start)
    return started


def _files(data_dir: Path) -> dict[str, Path]:
    return {h: data_dir / f"processed.{h}.data" for h in HOSPITALS}


def _hospital_state(state: Path, run_id: str, epsilon: float = 0.5) -> None:
    """What a hospital's gate leaves in its state folder after a DP run: a ledger entry and an audit line."""
    book = BudgetBook.open(state, "ab" * 32, state.name)
    run = book.run(run_id)
    book.reserve(run, 1.0, 1e-6, 3.0)
    run.epsilon = epsilon
    book.save()
    audit.append(state, {"run": run_id, "message": "train", "decision": "accepted"})


# -- launcher.deploy -------------------------------------------------------------------------------
def test_deploy_refuses_a_wrong_policy_naming_file_line_and_key(
        tmp_path: Path, deploy_args: list[str], no_start: list[Deployment], capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    code = deploy.main([*deploy_args, "--policy", str(bad), "--state-root", str(tmp_path / "state")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{bad}, line 4, key release.baseline: unknown key" in err, err
    assert not no_start and not (tmp_path / "work").exists() and not (tmp_path / "state").exists()


def test_deploy_refuses_an_unreadable_policy_and_a_policy_without_state_root(
        tmp_path: Path, policy: Path, deploy_args: list[str], no_start: list[Deployment],
        capsys: pytest.CaptureFixture) -> None:
    assert deploy.main([*deploy_args, "--policy", str(tmp_path / "missing.yaml"),
                        "--state-root", str(tmp_path / "state")]) == 2
    assert "missing.yaml: cannot read the hospital policy" in capsys.readouterr().err
    assert deploy.main([*deploy_args, "--policy", str(policy)]) == 2
    assert "--policy needs --state-root" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    assert deploy.main([*deploy_args, "--policy", str(policy), "--state-root", str(tmp_path / "a-file")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert not no_start and not (tmp_path / "work").exists()


def test_deploy_without_policy_says_the_aggregator_is_trusted(
        deploy_args: list[str], no_start: list[Deployment], capsys: pytest.CaptureFixture) -> None:
    assert deploy.main([*deploy_args, "--launcher", "flower"]) == 1  # the (replaced) start fails
    out = capsys.readouterr().out
    assert out.count(NO_POLICY) == 1
    assert "Flower's stock SuperExec (--launcher flower): any app submitted runs" in out
    (deployment,) = no_start
    assert not deployment.policies and not deployment.state_dirs and deployment.launcher == "flower"
    assert deployment.node_config("va") == {"data-path": str(deployment.data_files["va"]), "hospital": "va"}


def test_the_hospital_launcher_needs_a_policy_to_approve_anything(
        tmp_path: Path, deploy_args: list[str], no_start: list[Deployment], capsys: pytest.CaptureFixture) -> None:
    assert deploy.main(deploy_args) == 2  # --launcher hospital is the default
    err = capsys.readouterr().err
    assert "--launcher hospital (the default) runs only the apps a hospital's policy approves" in err, err
    assert "approved-apps" in err and "python -m launcher.fab ." in err and "--launcher flower" in err
    assert not no_start and not (tmp_path / "work").exists()
    with pytest.raises(FlowerError, match="approved-apps"):
        Deployment(tmp_path / "w", _files(Path(deploy_args[1])), tmp_path / "out", state_root=tmp_path / "state")
    with pytest.raises(FlowerError, match="launcher 'superexec': one of hospital, flower"):
        Deployment(tmp_path / "w", _files(Path(deploy_args[1])), tmp_path / "out", launcher="superexec")


def test_deploy_names_the_app_hash_and_the_policies_that_do_not_approve_it(
        tmp_path: Path, policy: Path, deploy_args: list[str], no_start: list[Deployment],
        capsys: pytest.CaptureFixture) -> None:
    digest = app_hash(REPO_ROOT)
    approving = tmp_path / "approving.yaml"
    approving.write_text(GOOD + f"approved-apps: [{digest}]\n")
    state = ["--state-root", str(tmp_path / "state")]
    assert deploy.main([*deploy_args, "--policy", str(approving), *state]) == 1  # the (replaced) start fails
    out, err = capsys.readouterr()
    assert f"bundle sha256 {digest}: the hash a hospital lists in approved-apps" in out
    assert "launcher.hospital beside it" in out and "warning" not in err
    assert no_start[-1].launcher == "hospital" and not no_start[-1].unapproving()
    assert deploy.main([*deploy_args, "--policy", str(policy), *state]) == 1
    err = capsys.readouterr().err
    for name in HOSPITALS:
        assert f"warning: {name}'s policy {policy} does not list {digest} in approved-apps" in err, err


def test_deploy_gives_every_supernode_its_policy_and_own_state_folder(
        tmp_path: Path, policy: Path, deploy_args: list[str], no_start: list[Deployment],
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths on the command line become absolute node configs
    assert deploy.main([*deploy_args, "--policy", policy.name, "--state-root", "state"]) == 1
    out = capsys.readouterr().out
    assert NO_POLICY not in out and f"Hospital policy: {policy}" in out
    (deployment,) = no_start
    for name in HOSPITALS:
        assert deployment.node_config(name) == {"data-path": str(deployment.data_files[name]), "hospital": name,
                                                "policy-path": str(policy),
                                                "state-dir": str(tmp_path / "state" / name)}
    assert deployment.rules["va"].lifetime_epsilon == 5.0


def test_deployment_checks_its_policies_and_state_folder_up_front(tmp_path: Path, policy: Path,
                                                                  data_dir: Path) -> None:
    files, out = _files(data_dir), tmp_path / "out"
    own = {"cleveland": policy, "va": tmp_path / "va.yaml"}
    own["va"].write_text(BAD)
    with pytest.raises(deploy.PolicyError, match=r"va\.yaml, line 4, key release\.baseline"):
        Deployment(tmp_path / "w", files, out, policy=own, state_root=tmp_path / "state")
    with pytest.raises(FlowerError, match="no policy file for va"):
        Deployment(tmp_path / "w", files, out, policy={"cleveland": policy}, state_root=tmp_path / "state")
    with pytest.raises(FlowerError, match="needs a state folder"):
        Deployment(tmp_path / "w", files, out, policy=policy)
    quoted = tmp_path / "it's.yaml"
    quoted.write_text(GOOD)
    with pytest.raises(FlowerError, match="cannot pass a '"):
        Deployment(tmp_path / "w", files, out, policy=quoted, state_root=tmp_path / "state")
    # A state folder without a policy (Flower's SuperExec): audited, the aggregator still decides.
    audited = Deployment(tmp_path / "w", files, out, state_root=tmp_path / "state", launcher="flower")
    assert audited.node_config("va")["state-dir"] == str(tmp_path / "state" / "va")
    assert "policy-path" not in audited.node_config("va")
    assert not (tmp_path / "w").exists() and not (tmp_path / "state").exists()  # nothing made before start()


def test_deploy_ends_with_each_hospitals_audit_and_budget(
        tmp_path: Path, policy: Path, deploy_args: list[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    def start(self: Deployment, timeout: float = 180) -> Deployment:
        self.link = types.SimpleNamespace(address="127.0.0.1:1")  # type: ignore[assignment]
        self.node_ids = dict.fromkeys(self.data_files, "1")
        return self

    def run(self: Deployment, overrides: Any = (), **kwargs: Any) -> tuple[str, dict[str, Any]]:
        for state in self.state_dirs.values():
            _hospital_state(state, "42")
        return "42", {"status": COMPLETED, "elapsed": 3.0}

    monkeypatch.setattr(Deployment, "start", start)
    monkeypatch.setattr(Deployment, "run", run)
    monkeypatch.setattr(Deployment, "stop", lambda self: None)
    state = tmp_path / "state"
    assert deploy.main([*deploy_args, "--policy", str(policy), "--state-root", str(state)]) == 0
    out = capsys.readouterr().out
    for name in HOSPITALS:
        assert f"  {name}: audit OK: {state / name / 'audit.jsonl'}: 1 lines, hash chain intact" in out, out
        assert (f"  {name}: budget ({name}): run 42 spent epsilon 0.5000 of 1 reserved (delta 1e-06); "
                "lifetime epsilon charged 1.0000 of 5 (4.0000 left)") in out, out
    # A changed trail makes the command fail even though the run completed.
    (state / "va" / "audit.jsonl").write_text((state / "va" / "audit.jsonl").read_text().replace("train", "evaluate"))
    monkeypatch.setattr(Deployment, "run", lambda self, *a, **k: ("43", {"status": COMPLETED}))
    assert deploy.main([*deploy_args, "--policy", str(policy), "--state-root", str(state)]) == 1
    captured = capsys.readouterr()
    assert "va: audit FAILED" in captured.out and "does not verify" in captured.err
    assert "cleveland: budget (cleveland): run 43 released nothing from this file" in captured.out


def test_safeguard_report_names_missing_trails_and_ledgers(tmp_path: Path) -> None:
    lines, intact = safeguard_report({"va": tmp_path / "va"}, "1")
    assert not intact
    assert lines == [f"  va: audit FAILED: {tmp_path / 'va' / 'audit.jsonl'}: no audit trail",
                     f"  va: budget: no privacy ledger in {tmp_path / 'va'}"]


# -- launcher.simulate -----------------------------------------------------------------------------
@pytest.fixture
def simulated(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """run_simulation replaced: records its arguments, reports a completed run 7."""
    calls: list[dict[str, Any]] = []

    def run_simulation(overrides: list[str], supernodes: int, workdir: Path, stream: bool = True,
                       **kwargs: Any) -> dict:
        calls.append(kwargs)
        if kwargs.get("state_root"):
            _hospital_state(kwargs["state_root"] / "hungarian", "7", epsilon=0.25)
        return {"status": COMPLETED, "run-id": 7, "elapsed": 1.0}

    monkeypatch.setattr(simulate, "run_simulation", run_simulation)
    return calls


def test_simulate_passes_the_checked_policy_and_state_root(
        tmp_path: Path, policy: Path, simulated: list[dict[str, Any]], capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["--supernodes", "1", "--workdir", str(tmp_path / "work")]
    assert simulate.main([*args, "--policy", policy.name, "--state-root", "state"]) == 0
    assert simulated == [{"policy": policy, "state_root": tmp_path / "state"}]
    out = capsys.readouterr().out
    assert NO_POLICY not in out and f"Hospital policy: {policy}" in out
    assert ("  hungarian: budget (hungarian): run 7 spent epsilon 0.2500 of 1 reserved (delta 1e-06); "
            "lifetime epsilon charged 1.0000 of 5 (4.0000 left)") in out, out
    assert "  hungarian: audit OK" in out
    simulated.clear()
    assert simulate.main(args) == 0
    assert simulated == [{"policy": None, "state_root": None}]
    assert capsys.readouterr().out.count(NO_POLICY) == 1


def test_simulate_refuses_a_wrong_policy_before_anything_starts(
        tmp_path: Path, policy: Path, simulated: list[dict[str, Any]], capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    args = ["--supernodes", "1", "--workdir", str(tmp_path / "work")]
    assert simulate.main([*args, "--policy", str(bad), "--state-root", str(tmp_path / "state")]) == 2
    assert f"{bad}, line 4, key release.baseline: unknown key" in capsys.readouterr().err
    assert simulate.main([*args, "--policy", str(policy)]) == 2
    assert "--policy needs --state-root" in capsys.readouterr().err
    assert not simulated and not (tmp_path / "work").exists()


def test_the_superlink_env_carries_exactly_the_launchers_policy(
        tmp_path: Path, policy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDHEART_POLICY", "/somewhere/else.yaml")  # left in the caller's shell
    monkeypatch.setenv("FEDHEART_STATE_ROOT", "/somewhere/else")
    env = SuperLink(tmp_path, extra_env=simulate.safeguard_env(policy, tmp_path / "state")).env
    assert env["FEDHEART_POLICY"] == str(policy) and env["FEDHEART_STATE_ROOT"] == str(tmp_path / "state")
    env = SuperLink(tmp_path, extra_env=simulate.safeguard_env()).env
    assert env["FEDHEART_POLICY"] == "" and env["FEDHEART_STATE_ROOT"] == ""
