"""Read run folders (fedheart/runs.py) for the view: cheap, cached, never written to.

A file is parsed again only when its modification time or size changes, so a page that polls
every few seconds costs a few ``stat`` calls while nothing new was written. What the view serves
from here is what the server already holds: the resolved configuration, per-round metrics of the
global model, timings, the summary and the final model files, never a patient row.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from fedheart.colours import FEDERATION, colour, ordered
from fedheart.runs import METRICS, TIMINGS

CONFIG, SUMMARY, TRACKING = "config.yaml", "summary.json", "tracking.json"
MARKERS = (CONFIG, METRICS, TRACKING)  # a folder holding one of these is a run folder
DOWNLOADS = re.compile(r"final_model\.[A-Za-z0-9]+")  # the final model files a run folder offers
RUN_SUFFIX = re.compile(r"-run(\d+)$")  # default run names end with the Flower run id


class FileCache:
    """Parsed files, kept until their (mtime, size) changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[Path, tuple[tuple[int, int], Any]] = {}

    def get(self, path: Path, parse: Callable[[str], Any], default: Any = None) -> Any:
        try:
            st = path.stat()
        except OSError:
            return default
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._seen.get(path)
        if hit and hit[0] == stamp:
            return hit[1]
        try:
            value = parse(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):
            return default  # a file being replaced, or not what it should be: try again next time
        with self._lock:
            self._seen[path] = (stamp, value)
        return value


def json_lines(text: str) -> list[dict[str, Any]]:
    """Complete JSON lines (a line still being appended is left for the next read)."""
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _select(cfg: dict[str, Any], dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


class RunFolders:
    """The run folders under ``root`` (one level deep)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.cache = FileCache()

    def folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and any((p / m).exists() for m in MARKERS))

    def folder(self, name: str) -> Path | None:
        """The run folder called ``name`` (a plain folder name under root, nothing else)."""
        if not name or "/" in name or "\\" in name or name.startswith("."):
            return None
        path = self.root / name
        return path if path in self.folders() else None

    def _rows(self, path: Path, name: str) -> list[dict[str, Any]]:
        return self.cache.get(path / name, json_lines, [])

    def timings(self, path: Path) -> list[dict[str, Any]]:
        return self._rows(path, TIMINGS)

    def run_ids(self, path: Path) -> list[str]:
        """The Flower runs that wrote to this folder (a resumed run adds its own)."""
        ids = []
        tracking = self.cache.get(path / TRACKING, json.loads, {}) or {}
        if tracking.get("run_id") is not None:
            ids.append(str(tracking["run_id"]))
        ids += [str(r["run"]) for r in self._rows(path, TIMINGS) if r.get("run")]
        if m := RUN_SUFFIX.search(path.name):
            ids.append(m.group(1))
        return list(dict.fromkeys(ids))

    def overview(self, path: Path) -> dict[str, Any]:
        """One line of the runs table: settings, progress and timing of the run in ``path``."""
        cfg = self.cache.get(path / CONFIG, yaml.safe_load, {}) or {}
        summary = self.cache.get(path / SUMMARY, json.loads)
        rounds = [r for r in self._rows(path, METRICS) if r.get("phase") == "federation"]
        started = min((p.stat().st_mtime for p in (path / CONFIG, path / TRACKING) if p.exists()), default=None)
        last = max((p.stat().st_mtime for p in path.iterdir() if p.is_file()), default=started)
        return {
            "folder": path.name, "run_ids": self.run_ids(path),
            "strategy": _select(cfg, "strategy.name"), "privacy": _select(cfg, "privacy.mode"),
            "aggregation": _select(cfg, "aggregation.mode"), "model": _select(cfg, "model.name"),
            "rounds_planned": _select(cfg, "rounds"),
            "rounds_done": summary.get("rounds") if summary else len({int(r["round"]) for r in rounds}),
            "started": _iso(started) if started else None,
            "seconds": summary.get("seconds") if summary else (last - started if started and last else None),
            "finished": summary is not None,
            "stopped_reason": summary.get("stopped_reason") if summary else None,
        }

    def detail(self, path: Path) -> dict[str, Any]:
        """Everything the run page draws: series per hospital, privacy, timings, summary, downloads."""
        cfg = self.cache.get(path / CONFIG, yaml.safe_load, {}) or {}
        rows = self._rows(path, METRICS)
        timings = self._rows(path, TIMINGS)
        names = ordered(str(r["hospital"]) for r in rows + timings
                        if r.get("hospital") not in (None, "all") and r.get("phase") != "secagg")
        return {
            **self.overview(path),
            "hospitals": names,
            "colours": {**{n: colour(n) for n in names}, "all": FEDERATION},
            "metrics": [r for r in rows if r.get("phase") in ("train", "evaluate", "federation")],
            "timings": timings,
            "budget": _select(cfg, "privacy.epsilon"),
            "delta": _select(cfg, "privacy.delta"),
            "summary": self.cache.get(path / SUMMARY, json.loads),
            "downloads": self.downloads(path),
        }

    def downloads(self, path: Path) -> list[dict[str, Any]]:
        return [{"name": p.name, "bytes": p.stat().st_size} for p in sorted(path.iterdir())
                if p.is_file() and DOWNLOADS.fullmatch(p.name)]

    def download(self, name: str, filename: str) -> Path | None:
        """A final model file of run folder ``name``; None for anything else."""
        path = self.folder(name)
        if path is None or not DOWNLOADS.fullmatch(filename):
            return None
        file = path / filename
        return file if file.is_file() else None

    def stamp(self, path: Path) -> str:
        """Changes whenever a file of the run folder does (the run page's ETag)."""
        parts = []
        for p in sorted(path.iterdir()):
            if p.is_file():
                st = p.stat()
                parts.append(f"{p.name}:{st.st_mtime_ns}:{st.st_size}")
        return str(hash("|".join(parts)) & 0xFFFFFFFFFFFF)
