"""A hospital's lifetime privacy ledger, on its own storage: every DP release of every run on a data file.

One JSON file per data file, ``STATE_DIR/budget/<sha256 of the file>.json``, holding per run (Flower's
run id) the Opacus RDP history of its releases, the cap it reserved, its calibrated noise, whether its
statistics were released, its noisy row count and how many evaluations it released. It survives
SuperNode restarts (a restarted node continues from it) and accumulates across runs.

Lifetime accounting: each run reserves its whole cap (the request's privacy.epsilon, at most the
policy's ``max-epsilon-per-run``) before its first release, and the sum over runs of max(reserved,
spent) may not pass ``lifetime-epsilon`` (basic composition over runs, an upper bound of their
composed epsilon). Writes are atomic; callers hold :func:`fedheart.safeguard.files.locked`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedheart.privacy.ledger import Entry, Ledger
from fedheart.safeguard.files import replace_file
from fedheart.safeguard.policy import Refused

BUDGET_DIR = "budget"
SLACK = 1e-9


@dataclass
class RunBudget:
    """What one run released from one data file."""

    run_id: str
    started: str = ""
    reserved: float = 0.0  # the run's cap, reserved at its first release
    delta: float = 0.0
    history: list[Entry] = field(default_factory=list)
    calibrated_noise: float | None = None
    statistics: bool = False  # the preprocessing statistics were released (allowed once per run)
    public_rows: float | None = None  # the noisy training-row count released with them
    evaluations: int = 0
    epsilon: float = 0.0  # spent so far, at ``delta``

    @property
    def ledger(self) -> Ledger:
        return Ledger(history=list(self.history), noise_multiplier=self.calibrated_noise)

    def take(self, ledger: Ledger) -> None:
        """Keep what ``ledger`` now holds (after a release)."""
        self.history = [(float(z), float(q), int(n)) for z, q, n in ledger.history]
        self.calibrated_noise = ledger.noise_multiplier
        self.epsilon = ledger.epsilon(self.delta) if self.history else 0.0


@dataclass
class BudgetBook:
    """The ledger of one data file in one state folder."""

    path: Path
    data_sha256: str
    data_name: str = ""
    runs: dict[str, RunBudget] = field(default_factory=dict)
    limit: float | None = None  # the policy's lifetime-epsilon when a run last reserved

    @classmethod
    def open(cls, state_dir: Path, data_sha256: str, data_name: str = "") -> BudgetBook:
        path = Path(state_dir) / BUDGET_DIR / f"{data_sha256}.json"
        if not path.exists():
            return cls(path, data_sha256, data_name)
        data = json.loads(path.read_text())
        runs = {}
        for key, run in data["runs"].items():
            run["history"] = [tuple(e) for e in run["history"]]
            runs[key] = RunBudget(**run)
        return cls(path, data["data_sha256"], data.get("data_name", data_name), runs, data.get("limit"))

    def save(self) -> None:
        body = {"data_sha256": self.data_sha256, "data_name": self.data_name, "limit": self.limit,
                "runs": {k: asdict(r) for k, r in self.runs.items()}}
        replace_file(self.path, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())

    def run(self, run_id: int | str) -> RunBudget:
        key = str(run_id)
        if key not in self.runs:
            self.runs[key] = RunBudget(key, started=datetime.now(UTC).isoformat(timespec="seconds"))
        return self.runs[key]

    def lifetime(self, exclude: str | None = None) -> float:
        """Epsilon charged over all runs (each at max(reserved, spent)), optionally without one run."""
        return sum(max(r.reserved, r.epsilon) for k, r in self.runs.items() if k != exclude)

    def reserve(self, run: RunBudget, cap: float, delta: float, lifetime_limit: float) -> None:
        """Reserve ``cap`` for ``run`` before its first release, or refuse if the lifetime budget is short."""
        if run.reserved:
            return
        before = self.lifetime(exclude=run.run_id)
        if before + cap > lifetime_limit + SLACK:
            raise Refused("privacy.lifetime-epsilon",
                          f"a run of epsilon {cap:g} after {before:.3f} already spent on this data file",
                          f"{lifetime_limit:g} in all ({max(lifetime_limit - before, 0):.3f} left)")
        run.reserved, run.delta, self.limit = cap, delta, lifetime_limit

    def summary(self) -> dict[str, Any]:
        """Spent and reserved per run and in all (``fedheart budget``)."""
        return {"data_sha256": self.data_sha256, "data_name": self.data_name, "lifetime": self.lifetime(),
                "limit": self.limit,
                "runs": [{"run": k, "started": r.started, "reserved": r.reserved, "spent": r.epsilon,
                          "delta": r.delta, "statistics": r.statistics, "evaluations": r.evaluations}
                         for k, r in sorted(self.runs.items(), key=lambda kv: kv[1].started)]}


def books(state_dir: Path) -> list[BudgetBook]:
    """Every data file's ledger in a state folder."""
    folder = Path(state_dir) / BUDGET_DIR
    return [BudgetBook.open(state_dir, p.stem) for p in sorted(folder.glob("*.json"))]
