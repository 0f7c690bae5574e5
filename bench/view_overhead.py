"""View overhead: does ``fedheart view``, open and refreshing in a browser, slow a run down?

    python bench/view_overhead.py [--rounds 15] [--repeats 2] [--out bench/results/view]

Real Flower simulations of the four hospitals on one simulation SuperLink, alternating runs without the
view and runs with it: ``fedheart view`` on the SuperLink and the run folders, and headless chromium
(Playwright, Debian's /usr/bin/chromium) holding the index page (polls every 5 s) and the run's page
(polls every 3 s, redraws its charts at most every 10 s) open for the whole run, opened before it.
Reported per mode: the median of Flower's elapsed time per run (running to finished) and of the server's own run time
(summary.json ``seconds``), and the ratio with/without (target <= 1.05). Needs the UCI files
(``FEDHEART_DATA_DIR``). Run it under the e2e lock on a shared machine
(``flock /tmp/fedheart-e2e.lock ...``); the load average is reported with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.perf import machine  # noqa: E402
from launcher.flower import (  # noqa: E402
    SuperLink,
    free_port,
    health_ok,
    start_process,
    submit_run,
    wait_for_run,
    wait_until,
)

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
MODES = ("without", "with-view")


class OpenView:
    """``fedheart view`` and a headless browser showing the index and the run's page."""

    def __init__(self, link: SuperLink, outputs: Path, run_name: str, work: Path) -> None:
        from playwright.sync_api import sync_playwright

        port = free_port()
        argv = [sys.executable, "-m", "fedheart_cli", "view", "--runs", str(outputs), "--port", str(port),
                "--superlink", link.connection]
        self.process = start_process("view", argv, {**link.env}, work / f"view-{port}.log")
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: health_ok(f"{url}/api/runs"), 60, "fedheart view", self.process.popen,
                   self.process.log_path)
        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        self.pages = [self.browser.new_page(), self.browser.new_page()]
        self.pages[0].goto(f"{url}/")
        self.pages[1].goto(f"{url}/run/{run_name}")
        # Opened before the run, as an operator would: the browser's start and its first parse of
        # plotly.js are not a cost of the run. Settled once the index has polled and the run's page (which
        # polls for a run not yet submitted) holds plotly.js.
        self.pages[0].wait_for_function("() => Number(document.body.dataset.updates || 0) >= 1", timeout=60_000)
        self.pages[1].wait_for_function("() => document.readyState === 'complete' && window.Plotly !== undefined",
                                        timeout=60_000)
        self.cpu_at_open = self.cpu_seconds()

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU seconds used so far by the view's process, and by the browser (Playwright's driver and
        chromium's processes, all children of this one)."""
        import psutil

        view = browser = 0.0
        for proc in psutil.Process().children(recursive=True):
            try:
                name, t = proc.name(), proc.cpu_times()
            except psutil.Error:
                continue
            if proc.pid == self.process.popen.pid:
                view += t.user + t.system
            elif any(k in name for k in ("chrom", "node", "playwright")):
                browser += t.user + t.system
        return view, browser

    def updates(self) -> int:
        """How many times the pages refreshed (each successful poll counts)."""
        return sum(int(p.evaluate("() => Number(document.body.dataset.updates || 0)")) for p in self.pages)

    def close(self) -> None:
        self.browser.close()
        self.playwright.stop()
        self.process.stop()


def run_once(link: SuperLink, outputs: Path, work: Path, mode: str, rounds: int, label: str) -> dict:
    name = f"{mode}-{label}"
    view = OpenView(link, outputs, name, work) if mode == "with-view" else None
    try:
        run_id = submit_run(link, overrides=[f"rounds={rounds}", f"output.run_name={name}"], stream=False,
                            echo=None, federation={"num-supernodes": 4, "client-resources-num-cpus": 1})
        record = wait_for_run(link, run_id)
        refreshes = view.updates() if view else 0
        view_cpu, browser_cpu = (0.0, 0.0)
        if view:
            view_cpu, browser_cpu = (now - at_open for now, at_open in
                                     zip(view.cpu_seconds(), view.cpu_at_open, strict=True))
    finally:
        if view:
            view.close()
    if record["status"] != "finished:completed":
        reason = record.get("details") or "no reason given"
        raise SystemExit(f"run {name} ({run_id}) ended {record['status']}: {reason}")
    summary = json.loads((outputs / name / "summary.json").read_text())
    return {"mode": mode, "status": record["status"], "flower_elapsed_s": float(record["elapsed"]),
            "server_run_s": float(summary["seconds"]), "page_refreshes": refreshes, "view_cpu_s": view_cpu,
            "browser_cpu_s": browser_cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode (modes alternate)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "view")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work" / time.strftime("%Y%m%d-%H%M%S")
    outputs = work / "runs"
    env = {"FEDHEART_OUTPUT_DIR": str(outputs)}
    if "FEDHEART_DATA_DIR" in os.environ:
        env["FEDHEART_DATA_DIR"] = os.environ["FEDHEART_DATA_DIR"]
    rows: list[dict] = []
    load_before = os.getloadavg()
    with SuperLink(work / "superlink", extra_env=env) as link:
        for repeat in range(args.repeats):
            for mode in MODES if repeat % 2 == 0 else MODES[::-1]:  # ABBA: drift hits both modes alike
                row = run_once(link, outputs, work, mode, args.rounds, f"{repeat}-{time.strftime('%H%M%S')}")
                row["repeat"] = repeat
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        summary[mode] = {k: statistics.median(r[k] for r in mine) for k in ("flower_elapsed_s", "server_run_s")}
        summary[mode]["statuses"] = sorted({r["status"] for r in mine})
    ratio = {k: summary["with-view"][k] / summary["without"][k] for k in ("flower_elapsed_s", "server_run_s")}
    # Each repeat holds one run of each mode back to back: its ratio cancels the machine's drift.
    pairs = [{k: w[k] / o[k] for k in ("flower_elapsed_s", "server_run_s")}
             for w, o in ((next(r for r in rows if r["repeat"] == i and r["mode"] == "with-view"),
                           next(r for r in rows if r["repeat"] == i and r["mode"] == "without"))
                          for i in range(args.repeats))]
    paired = {k: statistics.median(p[k] for p in pairs) for k in ("flower_elapsed_s", "server_run_s")}
    m = machine()
    result = {"machine": f"{m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}",
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": args.rounds,
              "repeats": args.repeats, "load_before": load_before, "load_after": os.getloadavg(), "rows": rows,
              "summary": summary, "ratio_with_over_without": ratio, "paired_ratios": pairs,
              "median_paired_ratio": paired}
    (args.out / "view_overhead.json").write_text(json.dumps(result, indent=2))
    lines = ["# View overhead: a run with `fedheart view` open in a browser vs without", "",
             f"{result['machine']}, {result['when']}. Real simulation, 4 hospitals, {args.rounds} rounds; "
             f"median over {args.repeats} runs per mode (ABBA order). Load average before: "
             f"{', '.join(f'{x:.1f}' for x in load_before)}; after: "
             f"{', '.join(f'{x:.1f}' for x in result['load_after'])}.", "",
             "| mode | status | Flower elapsed s | server run s | page refreshes | view CPU s | browser CPU s |",
             "|---|---|---|---|---|---|---|"]
    for mode, s in summary.items():
        refreshes = statistics.median(r["page_refreshes"] for r in rows if r["mode"] == mode)
        cpu = [statistics.median(r[k] for r in rows if r["mode"] == mode) for k in ("view_cpu_s", "browser_cpu_s")]
        lines.append(f"| {mode} | {', '.join(s['statuses'])} | {s['flower_elapsed_s']:.1f} | {s['server_run_s']:.1f} "
                     f"| {refreshes:.0f} | {cpu[0]:.1f} | {cpu[1]:.1f} |")
    lines += ["", f"with/without: Flower elapsed {ratio['flower_elapsed_s']:.3f}, server run "
              f"{ratio['server_run_s']:.3f} (target <= 1.05).", "",
              "Per repeat (its two runs back to back), Flower elapsed with/without: "
              + ", ".join(f"{p['flower_elapsed_s']:.3f}" for p in pairs)
              + f"; median {paired['flower_elapsed_s']:.3f} (server run: {paired['server_run_s']:.3f}).", "",
              "The view and the browser are opened, and each page has polled once, before the run is "
              "submitted; their CPU columns count the run only."]
    (args.out / "view_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
