"""``fedheart view``'s web app over fixture run folders (FastAPI's in-process client; no SuperLink here:
the browser tests with a real one are in tests/e2e/test_view.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fedheart.colours import colour
from fedheart.schema import HOSPITALS
from tests.view_runs import FINISHED, RUNNING, write_runs
from webview.app import create_app
from webview.flower import FlowerState


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_runs(tmp_path_factory.mktemp("view") / "outputs")


def _client(root: Path) -> TestClient:
    return TestClient(create_app(root), base_url="http://127.0.0.1")


@pytest.fixture
def client(runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))  # no Flower configuration: folders only
    return _client(runs[FINISHED].parent)


def test_runs_lists_each_folder_with_its_settings_and_progress(client: TestClient, tmp_path: Path) -> None:
    data = client.get("/api/runs").json()
    assert not data["flower_ok"] and "no Flower configuration" in data["flower_error"]
    assert not (tmp_path / "flwr-home").exists()  # read only: Flower's reader would have written a default
    rows = {r["folder"]: r for r in data["runs"]}
    assert set(rows) == {FINISHED, RUNNING}
    done, live = rows[FINISHED], rows[RUNNING]
    assert (done["strategy"], done["privacy"], done["rounds_done"], done["rounds_planned"]) == \
        ("fedavg", "dp-sgd", 3, 3)
    assert done["run_ids"] == ["111"] and done["finished"]
    assert (live["strategy"], live["rounds_done"], live["rounds_planned"], live["finished"]) == ("fedprox", 2, 4, False)


def test_run_page_data_holds_every_hospital_in_the_schemas_order_with_its_colour(
        client: TestClient, runs: dict[str, Path]) -> None:
    data = client.get(f"/api/runs/{FINISHED}").json()
    assert data["hospitals"] == [h.key for h in HOSPITALS]  # whatever order the replies came in
    assert data["colours"] == {**{h.key: colour(h.key) for h in HOSPITALS}, "all": "#000000"}  # as in report.html
    written = [json.loads(line) for line in (runs[FINISHED] / "metrics.jsonl").read_text().splitlines()]
    assert data["metrics"] == written
    assert data["budget"] == 3.0 and data["privacy"] == "dp-sgd"
    assert data["summary"] == json.loads((runs[FINISHED] / "summary.json").read_text())
    assert {"final_model.pt", "final_model.json"} <= {f["name"] for f in data["downloads"]}
    assert not data["live"]  # no SuperLink knows it
    assert client.get(f"/api/runs/{RUNNING}").json()["summary"] is None
    assert client.get("/api/runs/111").json()["folder"] == FINISHED  # a Flower run id finds its folder
    assert client.get("/api/runs/nope").status_code == 404


def test_unchanged_run_answers_304_and_a_new_round_changes_it(runs: dict[str, Path], tmp_path: Path) -> None:
    shutil.copytree(runs[RUNNING], tmp_path / "o" / RUNNING)
    client = _client(tmp_path / "o")
    first = client.get(f"/api/runs/{RUNNING}")
    etag = first.headers["etag"]
    assert client.get(f"/api/runs/{RUNNING}", headers={"If-None-Match": etag}).status_code == 304
    with (tmp_path / "o" / RUNNING / "metrics.jsonl").open("a") as out:
        out.write(json.dumps({"round": 3, "phase": "federation", "hospital": "all", "loss": 0.3}) + "\n")
    again = client.get(f"/api/runs/{RUNNING}", headers={"If-None-Match": etag})
    assert again.status_code == 200 and again.json()["rounds_done"] == 3


def test_download_returns_the_model_file_and_nothing_else(client: TestClient, runs: dict[str, Path]) -> None:
    got = client.get(f"/files/{FINISHED}/final_model.pt")
    assert got.status_code == 200 and got.content == (runs[FINISHED] / "final_model.pt").read_bytes()
    for path in (f"/files/{FINISHED}/config.yaml", f"/files/{FINISHED}/metrics.jsonl",
                 f"/files/{FINISHED}/..%2F..%2Fetc%2Fpasswd", f"/files/..%2F{FINISHED}/final_model.pt",
                 "/files/.hidden/final_model.pt", f"/files/{FINISHED}/final_model.pt%2F..%2Fsummary.json"):
        assert client.get(path).status_code == 404, path


def test_the_view_is_read_only_and_answers_only_its_own_host_name(client: TestClient) -> None:
    assert client.post("/api/runs").status_code == 405
    assert client.delete(f"/api/runs/{FINISHED}").status_code == 405
    # DNS rebinding: a page of another site that resolves its name to 127.0.0.1 gets nothing
    assert client.get("/api/runs", headers={"Host": "evil.example"}).status_code == 400
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]


def test_plotly_is_served_by_the_view_itself(client: TestClient) -> None:
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and b"plotly.js v" in js.content[:200]
    html = client.get(f"/run/{FINISHED}").text
    assert 'src="/static/plotly.min.js"' in html and "http" not in html.split("<body>")[0]


def test_an_unknown_connection_is_reported_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('[superlink]\ndefault = "x"\n\n[superlink.x]\naddress = "127.0.0.1:9"\n'
                                      "insecure = true\n")
    monkeypatch.setenv("FLWR_HOME", str(home))
    state = FlowerState("x", ttl=0)
    answer = state.get("runs")
    assert answer["ok"] is False and answer["error"]  # nothing listens on port 9
    assert "no SuperLink" in FlowerState("missing").describe()
