"""A run's output folder: resolved config, per-round metrics, checkpoints, final model.

Layout of ``<output.root>/<run-name>/``::

    config.yaml          resolved configuration
    metrics.jsonl        one JSON object per hospital per round, plus one "federation" row
    timings.jsonl        wall time per phase (statistics, train, evaluate, baselines): the server's
                         seconds until each hospital's reply, plus one "all" row for the whole phase
    checkpoint.pt        last completed round (written to a temp file, then renamed)
    final_model.pt       state dict of the final global model
    final_model.npz      the same weights for numpy (``fedheart predict`` runs without torch)
    final_model.json     feature list + preprocessing statistics needed to use the model
    final_model.onnx     the whole pipeline as one ONNX graph (fedheart.onnx_export; extra ``export``)
    summary.md/.json     final per-hospital table with baselines
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
TIMINGS = "timings.jsonl"
ENV_OUTPUT_DIR = "FEDHEART_OUTPUT_DIR"


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temp file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` through a temp file, fsync and rename (never a torn file)."""
    _atomic_write(path, lambda f: f.write(data))


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(jsonable(data), indent=2, sort_keys=True) + "\n")


def jsonable(value: Any) -> Any:
    """Numpy scalars/arrays to Python, NaN to None (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def output_root(configured: str) -> Path:
    """``$FEDHEART_OUTPUT_DIR`` beats ``output.root``; relative paths are taken from the cwd."""
    return Path(os.environ.get(ENV_OUTPUT_DIR) or configured).expanduser().resolve()


class RunDir:
    """Files of one run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def append_metrics(self, rows: list[dict[str, Any]], name: str = METRICS) -> None:
        """Append JSON lines to ``metrics.jsonl`` (or ``name``, e.g. :data:`TIMINGS`)."""
        with (self.path / name).open("a", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(jsonable(row), sort_keys=True) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.path / METRICS
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def truncate_metrics_after(self, last_round: int) -> None:
        """Drop metric rows of rounds after ``last_round`` (a resumed run redoes them)."""
        rows = [r for r in self.read_metrics() if int(r.get("round", 0)) <= last_round]
        write_text(self.path / METRICS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

    def save_checkpoint(self, state: dict[str, Any]) -> Path:
        import torch  # here, not at import: `fedheart predict` reads run folders without torch

        path = self.path / CHECKPOINT
        _atomic_write(path, lambda f: torch.save(state, f))
        return path

    def save_final_model(self, weights: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
        save_model_files(self.path, weights, meta)


def save_model_files(folder: Path, weights: Mapping[str, np.ndarray], meta: dict[str, Any]) -> None:
    """``final_model.pt`` (torch), ``final_model.npz`` (numpy) and ``final_model.json`` (meta) in ``folder``."""
    import io

    import torch

    arrays = {k: np.asarray(v) for k, v in weights.items()}
    state = {k: torch.as_tensor(v) for k, v in arrays.items()}
    _atomic_write(folder / "final_model.pt", lambda f: torch.save(state, f))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(folder / "final_model.npz", buffer.getvalue())
    write_json(folder / "final_model.json", meta)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint from a run folder or a checkpoint file, with a clear error."""
    import torch

    p = Path(path).expanduser()
    if p.is_dir():
        p = p / CHECKPOINT
    if not p.is_file():
        raise FileNotFoundError(f"resume: no checkpoint at {p} (expected a run folder holding {CHECKPOINT})")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"resume: {p} is not a readable checkpoint ({exc})") from None
    if not isinstance(state, dict) or "round" not in state or "weights" not in state:
        raise ValueError(f"resume: {p} is not a fedheart checkpoint")
    return state
