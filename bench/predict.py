"""Scoring speed: `fedheart predict` on 10,000 patients (target: under 2 s).

    FEDHEART_DATA_DIR=... python bench/predict.py [--rows 10000] [--repeats 5] [--out bench/results/predict]

The patient file holds rows drawn with replacement from the 920 real UCI rows (their missing
values included, no label column); the model folder is a project-pipeline MLP (32 hidden units)
saved as a run saves it. Measured: the whole command as a hospital runs it (a fresh Python
process: interpreter, imports, reading and validating the file, preprocessing, the model, writing
the CSV; wall time, and its CPU time, which a loaded machine inflates less), and, in one process,
those phases apart; ONNX Runtime on the same rows for comparison (when the ``export`` extra is
installed). Medians over ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.perf import machine  # noqa: E402
from fedheart.sources import data_dir  # noqa: E402

TARGET_S = 2.0


def make_inputs(work: Path, rows: int) -> tuple[Path, Path]:
    """A model folder and a patient file of ``rows`` real rows (drawn with replacement, no label)."""
    import numpy as np

    from fedheart import stats as fstats
    from fedheart.model import build_model, get_weights
    from fedheart.preprocess import project_preprocessor
    from fedheart.runs import RunDir
    from fedheart.schema import HOSPITALS
    from fedheart.tables import read_table

    folder, _ = data_dir(None)
    files = [folder / h.filename for h in HOSPITALS]
    totals = fstats.combine(fstats.local_stats(read_table(f).frame) for f in files)
    pre = project_preprocessor(fstats.GlobalStats.from_json(fstats.GlobalStats.from_totals(totals).to_json()))
    model = build_model("mlp", pre.num_features, seed=0)
    run = work / "run"
    RunDir(run).save_final_model(get_weights(model), {
        "model": "mlp", "model_settings": {"name": "mlp", "hidden": 32, "layers": 1, "dropout": 0.1},
        "pipeline": "project", "features": pre.feature_names, "preprocessing": pre.to_dict()})
    source = [line.rsplit(",", 1)[0] for f in files for line in f.read_text().splitlines() if line.strip()]
    picks = np.random.default_rng(0).integers(0, len(source), rows)
    patients = work / "patients.csv"
    patients.write_text("".join(source[i] + "\n" for i in picks))
    return run, patients


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def in_process(run: Path, patients: Path, out: Path) -> dict[str, float]:
    from fedheart.predict import load_model, predict_table, read_patients, write_output

    t0 = time.perf_counter()
    model = load_model(run)
    t1 = time.perf_counter()
    table = read_patients(patients, model)
    t2 = time.perf_counter()
    result = predict_table(model, table)
    t3 = time.perf_counter()
    write_output(result.to_csv(), out, [patients])
    t4 = time.perf_counter()
    return {"load_model_s": t1 - t0, "read_validate_s": t2 - t1, "score_s": t3 - t2, "write_csv_s": t4 - t3,
            "total_s": t4 - t0}


def onnx_seconds(run: Path, patients: Path) -> float | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from fedheart.onnx_export import export_onnx
    from fedheart.schema import FEATURES
    from fedheart.tables import read_table

    path = export_onnx(run, run / "bench.onnx")
    x = read_table(patients, label_optional=True).frame[list(FEATURES)].to_numpy(dtype="float32")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    t0 = time.perf_counter()
    session.run(None, {"features": x})
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "predict")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run, patients = make_inputs(work, args.rows)
        command = [sys.executable, "-m", "fedheart_cli", "predict", str(run), str(patients), "--out",
                   str(work / "cli.csv")]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        cli, cli_cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), _children_cpu()
            subprocess.run(command, check=True, env=env, timeout=120)
            cli.append(time.perf_counter() - t0)
            cli_cpu.append(_children_cpu() - c0)
        scored = len((work / "cli.csv").read_text().splitlines()) - 1
        phases = [in_process(run, patients, work / "in.csv") for _ in range(args.repeats)]
        onnx = onnx_seconds(run, patients)
    median = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
    m = machine()
    result = {"machine": f"{m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}",
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": args.rows, "scored": scored,
              "repeats": args.repeats, "load_after": os.getloadavg(), "command_s": cli,
              "command_median_s": statistics.median(cli), "command_cpu_s": cli_cpu,
              "command_cpu_median_s": statistics.median(cli_cpu), "in_process_median": median, "onnxruntime_s": onnx,
              "target_s": TARGET_S}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "predict.json").write_text(json.dumps(result, indent=2) + "\n")
    verdict = "met" if result["command_median_s"] < TARGET_S else "MISSED"
    lines = [f"# fedheart predict: {args.rows} patients", "",
             f"{result['machine']}, {result['when']}; load after {', '.join(f'{x:.1f}' for x in result['load_after'])}."
             f" Median of {args.repeats}.", "",
             "| what | seconds |", "|---|---|",
             f"| whole command (fresh process) | {result['command_median_s']:.2f} (target < {TARGET_S:g}: {verdict}) |",
             f"| whole command, CPU time (user + sys) | {result['command_cpu_median_s']:.2f} |",
             *(f"| in process: {k.removesuffix('_s').replace('_', ' ')} | {v:.3f} |" for k, v in median.items()),
             f"| ONNX Runtime, the graph alone | {onnx:.3f} |" if onnx is not None
             else "| ONNX Runtime | not installed |"]
    (args.out / "predict.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if scored == args.rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
