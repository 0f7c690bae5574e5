"""What the end-to-end fault modules read off a run: its metrics, checkpoint and final model, and the
messages a SuperNode pulled and answered (from its log). Shared by test_faults.py and test_superlink_restart.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedheart.runs import load_checkpoint
from launcher.flower import SuperNode

STEP_S = 300  # deadline of each step (generous: other jobs share the two cores)
TOLERANCE = 1e-6  # max abs difference of the final weights, deployment vs in-process reference
RUN_LINE = re.compile(r"\[RUN (\d+)\]")


def _messages(node: SuperNode, action: str, kind: str, run_id: str) -> int:
    """How many ``kind`` messages of run ``run_id`` the SuperNode has pulled (``Receiving``) or answered
    (``Sending``), from its log, where Flower writes ``[RUN <id>]`` on the line before each."""
    assert node.process is not None
    count, run = 0, None
    for line in node.process.log_path.read_text(errors="replace").splitlines():
        if m := RUN_LINE.search(line):
            run = m.group(1)
        elif f"{action}: {kind} message" in line and run == run_id:
            count += 1
    return count


def _received(node: SuperNode, kind: str, run_id: str) -> int:
    return _messages(node, "Receiving", kind, run_id)


def _sent(node: SuperNode, kind: str, run_id: str) -> int:
    return _messages(node, "Sending", kind, run_id)


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's complete lines (it may be being appended to)."""
    path = run_dir / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n") and line.strip()]


def _rounds(run_dir: Path) -> list[int]:
    return [r["round"] for r in _metrics(run_dir) if r["phase"] == "federation"]


def _checkpoint_round(run_dir: Path) -> int | None:
    return int(load_checkpoint(run_dir)["round"]) if (run_dir / "checkpoint.pt").exists() else None



def _final(run_dir: Path) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in torch.load(run_dir / "final_model.pt", weights_only=True).items()}
