"""What SecAgg+ costs: a SecAgg+ run against plain FedAvg, same settings, same benchmark run.

    python -m bench.secagg_cost [--clients 4 16] [--rounds 3] [--out bench/results/secagg/]

For each federation size it runs ``aggregation=plain`` and ``aggregation=secagg`` back to back:

- on one simulation SuperLink (Ray, 1 CPU per client): wall time from submit to finish and the
  mean round time (train + evaluate, from metrics.jsonl);
- in this process, on a LoopbackGrid (launcher/loopback.py: the same ClientApp, strategies and
  Flower serialisation, no SuperLink): run time, and the serialised bytes of the training messages
  per client per round, both ways (``flwr ls`` reports no network traffic for simulation runs).

16 clients list each UCI file four times (``data.hospitals``); the ClientApp names repeats apart.
Writes ``secagg_cost.json`` and ``secagg_cost.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fedheart.config import load_config
from fedheart.runs import ENV_OUTPUT_DIR, RunDir, write_json, write_text
from fedheart.schema import HOSPITALS
from fedheart.sources import ENV_DATA_DIR
from launcher.flower import REPO_ROOT, SuperLink, submit_run, wait_for_run

DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "secagg"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "uci-heart-disease"
MODES = ("plain", "secagg")


def overrides(mode: str, clients: int, rounds: int, name: str) -> list[str]:
    keys = [h.key for h in HOSPITALS]
    hospitals = ",".join(keys[i % len(keys)] for i in range(clients))
    return [f"aggregation={mode}", f"rounds={rounds}", f"min_hospitals={clients}", f"data.hospitals=[{hospitals}]",
            "baselines=false", f"output.run_name={name}"]


def simulated(link: SuperLink, outputs: Path, mode: str, clients: int, rounds: int,
              tag: str = "sim") -> dict[str, Any]:
    """One Flower simulation: wall time and mean round time."""
    name = f"{tag}-{mode}-{clients}"
    started = time.perf_counter()
    run_id = submit_run(link, overrides=overrides(mode, clients, rounds, name), stream=False, echo=None,
                        federation={"num-supernodes": clients, "client-resources-num-cpus": 1})
    record = wait_for_run(link, run_id, timeout=1800)
    wall = time.perf_counter() - started
    if record.get("status") != "finished:completed":
        raise RuntimeError(f"{name}: run {run_id} ended {record.get('status')}: {record.get('status-details')}")
    rows = RunDir(outputs / name).read_metrics()
    return {"sim_wall_s": wall,
            "sim_round_s": float(np.mean([r["seconds"] for r in rows if r["phase"] == "federation"]))}


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def in_process(mode: str, clients: int, rounds: int, tag: str = "loop") -> dict[str, Any]:
    """The same run on a LoopbackGrid: run time and serialised train-message bytes per client per round."""
    import client_app.app as client
    from launcher.loopback import LoopbackGrid
    from server_app.federation import Federation
    from server_app.strategies import build_strategy

    cfg = load_config(overrides(mode, clients, rounds, f"{tag}-{mode}-{clients}"))
    grid = LoopbackGrid(client.app, [{"partition-id": i, "num-partitions": clients} for i in range(clients)])
    started, cpu_started = time.perf_counter(), time.process_time()
    Federation(cfg, grid, build_strategy(cfg), run_id=1).run()  # SecAgg+ or plain training: aggregation.mode
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    per = clients * rounds

    def train(counter: Counter[tuple[int, str]]) -> float:
        return sum(v for (_, message_type), v in counter.items() if message_type == "train") / per

    client_cpu = sum(grid.client_cpu_s.values())
    return {"loop_run_s": seconds, "loop_server_cpu_s": cpu - client_cpu,
            "train_client_cpu_s": train(grid.client_cpu_s), "train_bytes_to_client": train(grid.bytes_sent),
            "train_bytes_from_client": train(grid.bytes_received),
            "train_bytes_per_client_round": train(grid.bytes_sent) + train(grid.bytes_received)}


def measure(clients: Sequence[int] = (4, 16), rounds: int = 3, data_dir: Path = DEFAULT_DATA) -> dict[str, Any]:
    """Plain and SecAgg+ for each size, simulated and in process; ratios SecAgg+ / plain."""
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="secagg-bench-") as tmp:
        work, outputs = Path(tmp), Path(tmp) / "outputs"
        env = {ENV_DATA_DIR: str(data_dir), ENV_OUTPUT_DIR: str(outputs)}
        with _env(env), SuperLink(work, extra_env=env) as link:
            # Warm-up, discarded: the first run pays imports, Ray start-up and cold caches.
            simulated(link, outputs, "secagg", min(clients), 1, tag="warmup")
            in_process("secagg", min(clients), 1, tag="warmup-loop")
            for n in clients:
                for mode in MODES:
                    row = {"mode": mode, "clients": n, "rounds": rounds,
                           **simulated(link, outputs, mode, n, rounds), **in_process(mode, n, rounds)}
                    results.append(row)
                    print(row, flush=True)
    keys = ("sim_wall_s", "sim_round_s", "loop_run_s", "loop_server_cpu_s", "train_client_cpu_s",
            "train_bytes_per_client_round")
    ratios = {}
    for n in clients:
        plain, secure = (next(r for r in results if r["clients"] == n and r["mode"] == m) for m in MODES)
        ratios[str(n)] = {k: secure[k] / plain[k] for k in keys}
    return {"results": results, "secagg_over_plain": ratios, "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}"}


def to_markdown(report: dict[str, Any]) -> str:
    rounds = report["results"][0]["rounds"]
    lines = ["# SecAgg+ cost against plain FedAvg", "",
             f"{report['machine']}, {report['date']}. Logistic regression (36 values), 100 local steps, {rounds} "
             "rounds, baselines off, after a discarded warm-up run. Other work shared the 2 CPUs, so wall times "
             "are noisy; CPU times and bytes are not.", "",
             "- *sim*: Flower simulation (Ray, 1 CPU per client): wall time from submit to finish, mean round "
             "time (train + evaluate).",
             "- *in process*: the same run on `launcher.loopback` (no Ray): wall time, the server's CPU time for "
             "the whole run, the client's CPU time per round for training messages (SecAgg+: all four stages, "
             "local training included), and the serialised bytes of the training messages per client per round.",
             "", "| clients | mode | sim wall s | sim round s | in-process s | server CPU s | client train CPU s "
             "/ round | train bytes to client | train bytes from client |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['clients']} | {r['mode']} | {r['sim_wall_s']:.1f} | {r['sim_round_s']:.2f} | "
                     f"{r['loop_run_s']:.1f} | {r['loop_server_cpu_s']:.2f} | {r['train_client_cpu_s']:.3f} | "
                     f"{r['train_bytes_to_client']:,.0f} | {r['train_bytes_from_client']:,.0f} |")
    lines += ["", "SecAgg+ / plain:", "", "| clients | sim wall | sim round | in-process | server CPU | "
              "client train CPU | train bytes |", "|---|---|---|---|---|---|---|"]
    for n, q in report["secagg_over_plain"].items():
        lines.append(f"| {n} | {q['sim_wall_s']:.2f}x | {q['sim_round_s']:.2f}x | {q['loop_run_s']:.2f}x | "
                     f"{q['loop_server_cpu_s']:.2f}x | {q['train_client_cpu_s']:.2f}x | "
                     f"{q['train_bytes_per_client_round']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(ENV_DATA_DIR) or DEFAULT_DATA))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    report = measure(args.clients, args.rounds, args.data)
    write_json(args.out / "secagg_cost.json", report)
    write_text(args.out / "secagg_cost.md", to_markdown(report))
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
