"""Tracking cost: does logging to SageMaker Experiments slow a round down?

    python bench/tracking_cost.py [--rounds 8] [--repeats 2] [--out bench/results/tracking]

Real Flower simulations of the four hospitals on one simulation SuperLink, alternating
``tracking=local`` and ``tracking=sagemaker``; SageMaker is moto's ThreadedMotoServer on 127.0.0.1
reached through ``AWS_ENDPOINT_URL`` (as in tests/e2e/test_tracking_sagemaker.py), and in a third
mode an endpoint where nothing listens (tracking fails once and goes off). Reported per mode: the
median seconds per round over rounds 2.. (round 1 carries the Ray workers' start-up and the SDK's
one-off import), the first round, and the whole run. Needs the ``aws`` extra and the UCI files
(``FEDHEART_DATA_DIR``). Run it under the e2e lock on a shared machine.
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
from launcher.flower import SuperLink, free_port, submit_run, wait_for_run  # noqa: E402

REGION = "eu-west-1"
MODES = ("local", "sagemaker", "sagemaker-down")


def run_once(link: SuperLink, outputs: Path, mode: str, rounds: int, label: str) -> dict:
    tracking = "local" if mode == "local" else "sagemaker"
    name = f"{mode}-{label}"
    run_id = submit_run(link, overrides=[f"rounds={rounds}", f"tracking={tracking}", "baselines=false",
                                         f"output.run_name={name}"],
                        stream=False, echo=None, federation={"num-supernodes": 4})
    record = wait_for_run(link, run_id)
    rows = [json.loads(line) for line in (outputs / name / "metrics.jsonl").read_text().splitlines()]
    seconds = [r["seconds"] for r in rows if r["phase"] == "federation"]
    return {"mode": mode, "status": record["status"], "round_1_s": seconds[0],
            "median_round_s": statistics.median(seconds[1:]), "run_s": float(record.get("elapsed", "nan"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "tracking")
    args = parser.parse_args(argv)
    from moto.server import ThreadedMotoServer

    args.out.mkdir(parents=True, exist_ok=True)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
           "AWS_EC2_METADATA_DISABLED": "true"}
    endpoints = {"local": f"http://{host}:{port}", "sagemaker": f"http://{host}:{port}",
                 "sagemaker-down": f"http://127.0.0.1:{free_port()}"}
    rows: list[dict] = []
    work = args.out / "work"
    try:
        for repeat in range(args.repeats):
            for mode in MODES:  # one SuperLink per mode: the endpoint is part of the apps' environment
                outputs = work / "outputs"
                env = {**aws, "AWS_ENDPOINT_URL": endpoints[mode], "FEDHEART_OUTPUT_DIR": str(outputs)}
                if "FEDHEART_DATA_DIR" in os.environ:
                    env["FEDHEART_DATA_DIR"] = os.environ["FEDHEART_DATA_DIR"]
                with SuperLink(work / f"superlink-{mode}", extra_env=env) as link:
                    row = run_once(link, outputs, mode, args.rounds, f"{repeat}-{time.strftime('%H%M%S')}")
                row["repeat"] = repeat
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        server.stop()
    summary = {}
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        summary[mode] = {k: statistics.median(r[k] for r in mine) for k in ("round_1_s", "median_round_s", "run_s")}
        summary[mode]["statuses"] = sorted({r["status"] for r in mine})
    m = machine()
    result = {"machine": f"{m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}",
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": args.rounds,
              "repeats": args.repeats, "load_after": os.getloadavg(), "rows": rows, "summary": summary}
    (args.out / "tracking_cost.json").write_text(json.dumps(result, indent=2))
    lines = ["# Tracking cost: local files vs SageMaker Experiments (moto server) vs endpoint down", "",
             f"{result['machine']}, {result['when']}. Real simulation, 4 hospitals, {args.rounds} rounds, "
             f"baselines off; median over {args.repeats} runs per mode (modes alternated). Load after: "
             f"{', '.join(f'{x:.1f}' for x in result['load_after'])}.", "",
             "| tracking | status | s / round (median of rounds 2..) | round 1 s | run s |", "|---|---|---|---|---|"]
    for mode, s in summary.items():
        lines.append(f"| {mode} | {', '.join(s['statuses'])} | {s['median_round_s']:.2f} | {s['round_1_s']:.1f} "
                     f"| {s['run_s']:.0f} |")
    (args.out / "tracking_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
