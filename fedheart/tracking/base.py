"""The tracker interface the apps talk to, and the wrapper that keeps a failing backend harmless."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping

log = logging.getLogger("fedheart.tracking")

Param = str | int | float


class TrackingError(RuntimeError):
    """The tracking backend cannot work here (missing package, no region...); the message says why."""


class Tracker(ABC):
    """Parameters and per-round metrics of one run (a hospital's or the aggregator's)."""

    @abstractmethod
    def log_params(self, params: Mapping[str, Param]) -> None:
        """Record parameters (a later value for the same name replaces the earlier one)."""

    @abstractmethod
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record metric values of one round (``step`` = round)."""

    def flush(self) -> None:  # noqa: B027 - backends without a buffer need not override
        """Send what is buffered."""

    def close(self) -> None:
        """Send what is left; the run is over."""
        self.flush()


class NullTracker(Tracker):
    """Logs nothing (the run's own files are the record)."""

    def log_params(self, params: Mapping[str, Param]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass


def describe(exc: BaseException) -> str:
    """One line naming the error (no traceback)."""
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text[:400]}"


class SafeTracker(Tracker):
    """Builds the real tracker on first use and turns every error into ONE warning, then stays off.

    Training must never stop or slow down because tracking fails: the first exception (from the
    factory or any call) is logged once with the reason, and every later call is a no-op.
    """

    def __init__(self, factory: Callable[[], Tracker], label: str, error: str | None = None) -> None:
        self._factory = factory
        self._inner: Tracker | None = None
        self.label = label
        self.error = error  # set: tracking is off (an earlier failure, possibly in another process)

    def _call(self, method: str, *args: object) -> None:
        if self.error is not None:
            return
        try:
            if self._inner is None:
                self._inner = self._factory()
            getattr(self._inner, method)(*args)
        except Exception as exc:
            self.error = describe(exc)
            log.warning("Experiment tracking is off for %s: %s. Training goes on; the metrics stay in the "
                        "local run files.", self.label, self.error)

    def log_params(self, params: Mapping[str, Param]) -> None:
        self._call("log_params", params)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._call("log_metrics", metrics, step)

    def flush(self) -> None:
        self._call("flush")

    def close(self) -> None:
        self._call("close")
