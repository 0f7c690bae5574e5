"""SageMaker Experiments tracking in a real 2-round simulation, against moto's server and with it down.

The ServerApp and ClientApps run in other processes (SuperLink, Ray workers), so they reach moto
through ``AWS_ENDPOINT_URL``; moto's ThreadedMotoServer runs in this process, where its backend
objects (the only place moto keeps per-step metric values) can be read. moto is made to refuse
duplicate creates as SageMaker does (see ``reject_duplicate_creates``).
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.backends import get_backend
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer

from launcher.flower import REPO_ROOT, SuperLink, free_port, tool
from tests.conftest import Simulation
from tests.unit.test_tracking_sagemaker import reject_duplicate_creates

pytestmark = pytest.mark.e2e

REGION = "eu-west-1"
HOSPITALS = ("cleveland", "hungarian", "switzerland", "va")
WARNING = "Experiment tracking is off for"


def tracked_simulation(work: Path, data_dir: Path, endpoint: str) -> SuperLink:
    """A simulation SuperLink whose apps see fake AWS credentials and ``endpoint``."""
    return SuperLink(work, extra_env={
        "FEDHEART_DATA_DIR": str(data_dir), "FEDHEART_OUTPUT_DIR": str(work / "outputs"),
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"})


@pytest.fixture
def moto_endpoint(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    caplog.set_level(logging.WARNING, logger="werkzeug")  # no line per request
    reject_duplicate_creates(monkeypatch)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def run_log(link: SuperLink, run_id: str) -> str:
    """The run's whole log (ServerApp and, forwarded by Ray, the ClientApps)."""
    out = subprocess.run([tool("flwr"), "log", run_id, link.connection, "--show"], env=link.env, cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    return out.stdout + out.stderr


def rows_of(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def logged_steps(trial_component: Any, metric: str) -> dict[int, float]:
    return {int(s): float(v["Value"]) for s, v in trial_component.metrics[metric]["Values"].items()}


def logged_params(trial_component: Any) -> dict[str, Any]:
    return {k: v.get("NumberValue", v.get("StringValue")) for k, v in trial_component.parameters.items()}


def test_two_rounds_log_every_hospital_and_the_aggregator(tmp_path: Path, data_dir: Path,
                                                           moto_endpoint: str) -> None:
    with tracked_simulation(tmp_path, data_dir, moto_endpoint) as link:
        run = Simulation(link, tmp_path / "outputs").run("rounds=2", "tracking=sagemaker")
        log = run_log(link, str(run.record["run-id"]))
    assert run.status == "finished:completed", run.record.get("status-details")
    assert WARNING not in log and "Round 2/2 done" in log
    experiment = json.loads((run.run_dir / "tracking.json").read_text())["experiment"]
    assert experiment.startswith("fed-heart-disease-")
    backend = get_backend("sagemaker")[DEFAULT_ACCOUNT_ID][REGION]
    assert experiment in backend.experiments
    runs = {f"client-{h}" for h in HOSPITALS} | {"aggregator"}
    components = {name: backend.trial_components[f"{experiment}-{name}"] for name in runs}
    trial = backend.trials[f"Default-Run-Group-{experiment}"]  # the SDK's run group
    assert set(trial.trial_components) == {f"{experiment}-{name}" for name in runs}

    rows = rows_of(run.run_dir)
    summary = run.summary
    for h in HOSPITALS:
        tc = components[f"client-{h}"]
        params = logged_params(tc)
        assert params["hospital"] == h and params["train-rows"] == summary["hospitals"][h]["train-rows"]
        assert (params["strategy"], params["learning-rate"], params["batch-size"], params["optimizer"],
                params["weight-decay"], params["local-steps"], params["privacy.mode"], params["device"]) == \
            ("fedavg", 0.05, 16, "sgd", 0.0, 100, "none", "cpu")
        train = {r["round"]: r for r in rows if r["phase"] == "train" and r["hospital"] == h}
        evaluate = {r["round"]: r for r in rows if r["phase"] == "evaluate" and r["hospital"] == h}
        assert logged_steps(tc, "Training:Loss") == pytest.approx({k: r["train-loss"] for k, r in train.items()})
        assert logged_steps(tc, "Validation:AUC") == pytest.approx({k: r["auc"] for k, r in evaluate.items()})
        assert logged_steps(tc, "Validation:Accuracy") == pytest.approx(
            {k: r["accuracy"] for k, r in evaluate.items()})
        assert set(train) == {1, 2}
    aggregator = components["aggregator"]
    params = logged_params(aggregator)
    assert (params["hospitals"], params["rounds"], params["strategy"]) == (",".join(sorted(HOSPITALS)), 2, "fedavg")
    federation = {r["round"]: r for r in rows if r["phase"] == "federation"}
    for metric, key in (("Test:AUC", "pooled-auc"), ("Test:Loss", "loss"), ("Test:Accuracy", "mean-accuracy"),
                        ("Training:Loss", "train-loss")):
        assert logged_steps(aggregator, metric) == pytest.approx({k: r[key] for k, r in federation.items()}), metric
    # the local report is written as always
    report = (run.run_dir / "report.html").read_text()
    assert experiment in report
    for png in ("loss", "auc", "roc"):
        assert (run.run_dir / "report" / f"{png}.png").stat().st_size > 1000


def test_endpoint_down_run_completes_and_warns_once(tmp_path: Path, data_dir: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with tracked_simulation(tmp_path, data_dir, endpoint) as link:
        run = Simulation(link, tmp_path / "outputs").run("rounds=2", "tracking=sagemaker")
        log = run_log(link, str(run.record["run-id"]))
    assert run.status == "finished:completed", run.record.get("status-details")
    rows = rows_of(run.run_dir)
    assert {(r["round"], r["phase"], r["hospital"]) for r in rows if r["phase"] != "federation"} == \
        {(k, p, h) for k in (1, 2) for p in ("train", "evaluate") for h in HOSPITALS}
    assert (run.run_dir / "report.html").is_file()
    # one warning for the aggregator and one per hospital (not one per round or message), no traceback
    warnings = [line for line in log.splitlines() if WARNING in line]
    assert sum("for the aggregator" in w for w in warnings) == 1, warnings
    for h in HOSPITALS:
        assert sum(f"for hospital {h} " in w for w in warnings) == 1, (h, warnings)
    assert len(warnings) == 1 + len(HOSPITALS), warnings
    assert all("Could not connect to the endpoint URL" in w and "repeated" not in w for w in warnings), warnings
    assert "Traceback" not in log
