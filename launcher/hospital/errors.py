"""The launcher's exit codes and the two exceptions that end it."""

from __future__ import annotations

EXIT_STOPPED, EXIT_API_GONE, EXIT_CONFIG = 0, 1, 2


class LauncherError(RuntimeError):
    """A configuration the launcher cannot start with (exit 2); the message says what."""


class Stop(BaseException):
    """SIGTERM/SIGINT: leave the poll loop (raised only while no acquired task is being handed on)."""
