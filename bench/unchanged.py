"""Behaviour unchanged by a refactor: the same seeded runs before and after, final models compared.

    cd OLD_CHECKOUT && python /path/to/bench/unchanged.py run OUT/before [CASE,...]
    cd NEW_CHECKOUT && python bench/unchanged.py run OUT/after [CASE,...]
    python bench/unchanged.py compare OUT/before OUT/after

Each case is a whole run of the real ServerApp federation and ClientApps over an in-process LoopbackGrid
(no Ray), seed 7, four UCI hospitals (``FEDHEART_DATA_DIR``); the final model (``final_model.pt``) and the
summary's numbers are saved per case and compared: the largest weight difference, and whether every
summary number is equal to 3 decimals. Two runs of the same code differ by ~1e-8 (the replies' order
changes float sums); DP-SGD draws its noise from a secret source and SecAgg+ its masks at random, so
those two differ by design and show only that they run.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CASES = {
    "fedavg-project": "strategy=fedavg rounds=4",
    "fedprox-project": "strategy=fedprox rounds=4",
    "fedadam-project": "strategy=fedadam rounds=4",
    "fedavg-flamby": "protocol=flamby strategy=fedavg rounds=4",
    "fedprox-flamby": "protocol=flamby strategy=fedprox rounds=4",
    "secagg-project": "strategy=fedavg rounds=3 aggregation=secagg",
    "dpsgd-project": "strategy=fedavg rounds=3 privacy=dp-sgd privacy.epsilon=3",
    "resume-fedadam": "strategy=fedadam rounds=2 | strategy=fedadam rounds=4 resume=RUN",  # 2 rounds, then resumed
}


def _federation(overrides: str, name: str) -> Any:  # either checkout's Federation
    import client_app.app as client
    from fedheart.config import load_config
    from launcher.loopback import LoopbackGrid
    from server_app.federation import Federation
    from server_app.strategies import build_strategy

    cfg = load_config(f"{overrides} seed=7 output.run_name={name}")
    kind = Federation
    if cfg.aggregation.mode == "secagg":
        with contextlib.suppress(ImportError):  # checkouts from before server_app.training's SecAgg+ step
            from server_app.secagg import SecAggFederation as kind  # type: ignore[attr-defined,no-redef]
    grid = LoopbackGrid(client.app, [{"partition-id": i, "num-partitions": 4} for i in range(4)])
    return kind(cfg, grid, build_strategy(cfg), run_id=1)


def run(out: Path, names: list[str]) -> None:
    import numpy as np
    import torch

    sys.path.insert(0, os.getcwd())  # the checkout this is run in, not this file's
    os.environ.setdefault("FEDHEART_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                                   / "uci-heart-disease"))
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        t0 = time.perf_counter()
        os.environ["FEDHEART_OUTPUT_DIR"] = tempfile.mkdtemp(prefix=f"unchanged-{name}-")
        federation = None
        for part in CASES[name].split(" | "):
            resume = str(federation.run_dir.path) if federation is not None else ""
            federation = _federation(part.replace("RUN", resume), name)
            federation.run()
        assert federation is not None
        path = federation.run_dir.path
        weights = {k: v.numpy() for k, v in torch.load(path / "final_model.pt").items()}
        np.savez(out / f"{name}.npz", **weights)
        summary = json.loads((path / "summary.json").read_text())
        keep = {k: summary.get(k) for k in ("rounds", "federation", "hospitals", "pooled")}
        (out / f"{name}.json").write_text(json.dumps(keep, default=str, sort_keys=True))
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)


def _numbers(value: object, prefix: str = "") -> dict[str, float]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _numbers(item, f"{prefix}{key}.").items()}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {prefix.rstrip("."): float(value)}
    return {}


def compare(before: Path, after: Path) -> str:
    import numpy as np

    lines = ["| case | max abs weight difference | summary numbers equal to 3 decimals |", "|---|---:|---|"]
    for file in sorted(before.glob("*.npz")):
        name = file.stem
        a, b = np.load(file), np.load(after / file.name)
        worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a.files) if set(a.files) == set(b.files) else None
        x, y = (_numbers(json.loads((d / f"{name}.json").read_text())) for d in (before, after))
        differ = sorted(k for k in set(x) | set(y) if k not in x or k not in y or round(x[k], 3) != round(y[k], 3))
        verdict = "yes" if not differ else f"no: {len(differ)} differ"
        lines.append(f"| {name} | {'arrays differ' if worst is None else f'{worst:.1e}'} | {verdict} "
                     f"(of {len(set(x) | set(y))}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "run":
        run(Path(sys.argv[2]), sys.argv[3].split(",") if len(sys.argv) > 3 else list(CASES))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        print(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        raise SystemExit(__doc__)
