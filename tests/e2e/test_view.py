"""``fedheart view`` in a real browser: Debian's chromium driven by Playwright, against the real command.

Fixture run folders (tests/view_runs.py) for the pages' content, the model download, loopback binding and
"nothing fetched off-host"; the shared TLS deployment (tests/e2e/conftest.py) for the live part: a run
appears, its rounds advance while it runs, it completes; the hospital table lists the four SuperNodes; a
run with a wrong configuration key shows Flower's reason.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from matplotlib.image import imread
from playwright import sync_api as playwright

from fedheart.schema import HOSPITALS
from launcher.deploy import Deployment
from launcher.flower import Process, free_port, health_ok, start_process, submit_run, wait_for_run, wait_until
from tests.view_runs import FINISHED, RUNNING, write_runs

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"  # Debian's (scripts/system-deps.sh); Playwright downloads no browser
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
NAMES = [h.key for h in HOSPITALS]


class View:
    """A ``fedheart view`` process on a free loopback port."""

    def __init__(self, work: Path, runs: Path, env: dict[str, str], superlink: str | None = None) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "fedheart_cli", "view", "--runs", str(runs), "--port", str(self.port)]
        argv += ["--superlink", superlink] if superlink else []
        self.process: Process = start_process("view", argv, {**os.environ, **env}, work / f"view-{self.port}.log")
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until(lambda: health_ok(f"{self.url}/api/runs"), 60, "fedheart view", self.process.popen,
                   self.process.log_path)

    def stop(self) -> None:
        self.process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Page:
    """A browser page that lets requests to the view through and records (and blocks) every other one, and
    records the page's errors (a script or style refused by the view's Content-Security-Policy is one).

    ``bypass_csp``: what the page itself asks for, without the CSP's protection (a CDN script would be
    refused by the CSP before any request, so only this shows it to the interception)."""

    def __init__(self, browser, base: str, bypass_csp: bool = False) -> None:  # type: ignore[no-untyped-def]
        self.base, self.off_host, self.errors = base, [], []
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True,
                                           bypass_csp=bypass_csp)
        self.page = self.context.new_page()
        self.page.route("**/*", self._route)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def _route(self, route) -> None:  # type: ignore[no-untyped-def]
        url = urllib.parse.urlsplit(route.request.url)
        if f"{url.scheme}://{url.netloc}" == self.base or url.scheme == "data":
            route.continue_()
        else:
            self.off_host.append(route.request.url)
            route.abort()

    def open(self, path: str) -> None:
        self.page.goto(self.base + path)
        self.page.wait_for_function("() => Number(document.body.dataset.updates || 0) >= 1")

    def series(self, chart: str) -> list[dict]:
        return self.page.evaluate(f"document.getElementById('{chart}').data.map(t => ({{name: t.name, "
                                  f"colour: t.line && t.line.color, n: (t.x || []).length}}))")

    def screenshot(self, path: Path) -> None:
        """Save a full-page screenshot and check that it shows something (not one flat colour)."""
        self.page.screenshot(path=str(path), full_page=True)
        pixels = imread(path)[..., :3]
        assert pixels.std() > 0.05, f"{path} looks blank"
        assert len({tuple(p) for p in pixels[::7, ::7].reshape(-1, 3).tolist()}) > 50, f"{path} looks blank"


@pytest.fixture(scope="module")
def fixture_view(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[View, dict[str, Path]]]:
    work = tmp_path_factory.mktemp("view-fixture")
    runs = write_runs(work / "outputs")
    view = View(work, work / "outputs", {"FLWR_HOME": str(work / "flwr-home")})
    try:
        yield view, runs
    finally:
        view.stop()


def test_the_view_binds_loopback_only_by_default(fixture_view: tuple[View, dict[str, Path]]) -> None:
    view, _ = fixture_view
    listening = [c.laddr for c in psutil.Process(view.process.popen.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening


def test_fixture_run_pages_show_every_hospital_and_fetch_nothing_off_host(
        browser, fixture_view: tuple[View, dict[str, Path]], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    view, runs = fixture_view
    page = Page(browser, view.url, bypass_csp=True)
    page.open("/")
    keys = page.page.eval_on_selector_all("#runs tbody tr", "rows => rows.map(r => r.dataset.key)")
    assert set(keys) == {FINISHED, RUNNING}
    assert page.page.inner_text(f"#runs tr[data-key='{RUNNING}'] td.rounds") == "2 / 4"
    page.screenshot(tmp_path / "index.png")

    page.open(f"/run/{FINISHED}")
    page.page.wait_for_function("() => document.body.dataset.live === 'false'")
    auc = page.series("chart-auc")
    assert [s["name"] for s in auc] == [*NAMES, "pooled test set"]  # one series per hospital, schema order
    assert len({s["colour"] for s in auc}) == len(auc) and all(s["n"] == 3 for s in auc)
    train = page.series("chart-train-loss")  # the same colour per hospital in every chart
    assert [(s["name"], s["colour"]) for s in train[:4]] == [(s["name"], s["colour"]) for s in auc[:4]]
    epsilon = page.series("chart-epsilon")
    assert [s["name"] for s in epsilon] == [*NAMES, "budget ε = 3"]
    timing = {s["name"] for s in page.series("chart-time-rounds")}
    assert {f"{n} train" for n in NAMES} <= timing
    summary = json.loads((runs[FINISHED] / "summary.json").read_text())
    cells = page.page.eval_on_selector_all("#summary-table tbody tr", "rows => rows.map(r => r.cells[0].innerText)")
    assert cells == [*NAMES, "mean over hospitals", "pooled test set"]
    shown = page.page.inner_text("#summary-table tbody tr:first-child td:nth-child(5)")  # AUC of cleveland
    assert float(shown) == pytest.approx(summary["hospitals"]["cleveland"]["auc"], abs=5e-4)
    with page.page.expect_download() as download:
        page.page.click("#downloads a:text-is('final_model.pt')")
    saved = tmp_path / "downloaded.pt"
    download.value.save_as(saved)
    assert saved.read_bytes() == (runs[FINISHED] / "final_model.pt").read_bytes()
    page.screenshot(tmp_path / "run.png")
    assert page.off_host == [] and page.errors == []


@pytest.fixture
def deployment_view(deployment: Deployment, tmp_path: Path) -> Iterator[View]:
    link = deployment.link
    assert link is not None
    view = View(tmp_path, deployment.output_dir, {"FLWR_HOME": str(link.flwr_home)}, superlink=link.connection)
    try:
        yield view
    finally:
        view.stop()


def test_live_run_on_the_deployment_advances_completes_and_a_failed_run_shows_why(
        browser, deployment: Deployment, deployment_view: View, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    link = deployment.link
    assert link is not None
    page = Page(browser, deployment_view.url)
    page.open("/")
    page.page.wait_for_function("() => document.querySelectorAll('#nodes tbody tr[data-node]').length >= 4")
    nodes = page.page.eval_on_selector_all(
        "#nodes tbody tr[data-node]", "rows => rows.map(r => [r.querySelector('.hospital').innerText, r.dataset.node])")
    assert dict(nodes) == deployment.node_ids  # the SuperLink's nodes: each hospital's name and node id
    page.screenshot(tmp_path / "federation.png")

    run_id = submit_run(link, overrides=["rounds=2", "baselines=false", "output.run_name=e2e-view"],
                        app_dir=deployment.app_dir, stream=False, echo=None)
    row = f"#runs tr[data-run-id='{run_id}']"
    page.page.wait_for_selector(row, timeout=60_000)  # the run appears without a reload
    page.page.evaluate("window.notReloaded = true")
    bad = submit_run(link, overrides=["nosuchkey=1"], app_dir=deployment.app_dir, stream=False, echo=None)

    live = Page(browser, deployment_view.url)
    live.open(f"/run/{run_id}")
    live.page.evaluate("window.notReloaded = true")
    # Its rounds advance while it runs: seen with one round of two done and Flower still running it.
    live.page.wait_for_function("() => document.getElementById('rounds').textContent === '1 / 2' && "
                                "document.getElementById('status').textContent === 'running'", timeout=240_000)
    live.screenshot(tmp_path / "run-live.png")
    live.page.wait_for_function("() => document.getElementById('status').textContent === 'finished:completed'",
                                timeout=240_000)
    live.page.wait_for_function("() => document.querySelectorAll('#downloads a').length > 0", timeout=30_000)
    assert live.page.evaluate("window.notReloaded === true")  # charts and numbers updated in place
    assert live.page.inner_text("#rounds") == "2 / 2"
    assert [s["name"] for s in live.series("chart-auc")] == [*NAMES, "pooled test set"]
    assert all(s["n"] == 2 for s in live.series("chart-auc"))
    run_dir = deployment.run_dir(run_id, "e2e-view")
    response = live.page.request.get(f"{deployment_view.url}/files/e2e-view/final_model.pt")
    assert response.ok and response.body() == (run_dir / "final_model.pt").read_bytes()
    # The server's timings (timings.jsonl): every hospital's reply in every phase, by its SuperNode's id.
    timings = [json.loads(line) for line in (run_dir / "timings.jsonl").read_text().splitlines()]
    replies = [t for t in timings if t["hospital"] != "all"]
    assert {(t["phase"], t["round"]) for t in replies} >= {("statistics", 0), ("train", 1), ("evaluate", 2)}
    assert {t["hospital"]: t["node"] for t in replies} == deployment.node_ids
    assert all(t["ok"] and t["seconds"] > 0 for t in replies)
    live.screenshot(tmp_path / "run-done.png")

    record = wait_for_run(link, bad, timeout=240)
    assert record["status"] == "finished:failed"
    page.page.wait_for_function(f"() => (document.querySelector(\"#runs tr[data-run-id='{bad}'] td.reason\") || "
                                "{innerText: ''}).innerText.includes('nosuchkey')", timeout=30_000)
    assert "finished:failed" in page.page.inner_text(f"#runs tr[data-run-id='{bad}'] td.status")
    assert page.page.evaluate("window.notReloaded === true")
    page.screenshot(tmp_path / "runs.png")
    assert page.off_host == [] and live.off_host == [] and page.errors == [] and live.errors == []
