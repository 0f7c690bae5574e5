"""The server's own error: the run cannot go on."""


class FederationError(RuntimeError):
    """The run cannot go on; the message says why."""
