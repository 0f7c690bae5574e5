"""The ``local`` backend: the run's own files are the record.

The server's :class:`fedheart.runs.RunDir` already writes every hospital's per-round metrics to
``metrics.jsonl`` and the final report to the run folder, so this tracker adds nothing.
"""

from __future__ import annotations

from fedheart.tracking.base import NullTracker


class LocalTracker(NullTracker):
    """Nothing to send: ``metrics.jsonl``, ``summary.*`` and ``report.html`` hold the run."""
