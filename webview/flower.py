"""Flower's state as the view shows it: runs and SuperNodes from the SuperLink's Control API.

The same calls as ``flwr ls`` and ``flwr supernode ls`` (``ListRuns``, ``ListNodes``), made from this
process through Flower's own Control API client and connection settings (``$FLWR_HOME/config.toml``,
TLS and all) instead of a ``flwr`` process per refresh (~2 s of CPU each). Answers are kept for
``ttl`` seconds, whatever number of pages poll: the SuperLink sees at most one call per ``ttl``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import UTC, datetime
from typing import Any

FINISHED = "finished"


def _when(iso: str) -> str | None:
    """Flower's ISO timestamp as ``YYYY-MM-DD HH:MM:SSZ`` (None when unset)."""
    if not iso:
        return None
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _seconds(start: str, end: str | None) -> float | None:
    if not start:
        return None
    stop = datetime.fromisoformat(end) if end else datetime.now(UTC)
    return (stop - datetime.fromisoformat(start)).total_seconds()


def run_record(run: Any) -> dict[str, Any]:
    """A ``flwr.common.typing.Run`` as the view's JSON (run ids as strings: they are 64-bit)."""
    status = f"{run.status.status}:{run.status.sub_status}" if run.status.sub_status else run.status.status
    return {"run_id": str(run.run_id), "status": status, "details": run.status.details or "",
            "app": f"{run.fab_id}=={run.fab_version}", "overrides": str(run.override_config.get("overrides", "")),
            "pending_at": _when(run.pending_at), "running_at": _when(run.running_at),
            "finished_at": _when(run.finished_at),
            "elapsed": _seconds(run.running_at, run.finished_at or None)}


def node_record(node: Any) -> dict[str, Any]:
    """A ``NodeInfo`` as the view's JSON: id, name, status, when it came online and was last seen."""
    online = node.status == "online"
    return {"node_id": str(node.node_id), "name": node.name or "", "owner": node.owner_name, "status": node.status,
            "registered_at": _when(node.registered_at), "online_since": _when(node.last_activated_at) if online
            else None, "last_seen": "now" if online else _when(node.last_deactivated_at)}


class FlowerState:
    """Runs and nodes of the SuperLink behind one Flower connection (``None``: the default one)."""

    def __init__(self, connection: str | None = None, ttl: float = 5.0) -> None:
        self.connection = connection
        self.ttl = ttl
        self._lock = threading.Lock()
        self._client: Any = None
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    def describe(self) -> str:
        """Which SuperLink this is (name and address), or why there is none; raises nothing."""
        try:
            conn = self._connection()
        except (Exception, SystemExit) as exc:  # Flower's CLI helpers exit on a bad connection
            return f"no SuperLink: {_message(exc)}"
        return f"{conn.name} ({conn.address})"

    def _connection(self) -> Any:
        """The connection from ``$FLWR_HOME/config.toml``, read only: Flower's reader would write a default
        file where there is none, and a ``:local:`` address would make Flower's client start a local
        SuperLink; the view only connects to the local one if it already runs."""
        from flwr.cli.constant import (
            FLOWER_CONFIG_FILE,
            LOCAL_SUPERLINK_ADDRESS_MAGIC_VALUE,
            LOCAL_SUPERLINK_ADDRESS_MAGIC_VALUE_IN_MEMORY,
            LOCAL_SUPERLINK_HTTP_API_PORT,
        )
        from flwr.cli.flower_config import read_superlink_connection
        from flwr.cli.typing import SuperLinkConnection
        from flwr.supercore.utils import get_flwr_home

        config = get_flwr_home() / FLOWER_CONFIG_FILE
        if not config.is_file():
            raise FileNotFoundError(f"no Flower configuration at {config} (set FLWR_HOME)")
        conn = read_superlink_connection(self.connection)
        if conn.address in (LOCAL_SUPERLINK_ADDRESS_MAGIC_VALUE, LOCAL_SUPERLINK_ADDRESS_MAGIC_VALUE_IN_MEMORY):
            conn = SuperLinkConnection(name=conn.name, address=f"127.0.0.1:{LOCAL_SUPERLINK_HTTP_API_PORT}",
                                       insecure=True, federation=conn.federation)
        return conn

    def _call(self, what: str) -> dict[str, Any]:
        from flwr.cli.utils import init_http_client_from_connection
        from flwr.common.serde import run_from_proto
        from flwr.proto.control_pb2 import ListNodesRequest, ListRunsRequest  # pylint: disable=E0611

        if self._client is None:
            self._client = init_http_client_from_connection(self._connection())
        if what == "runs":
            res = self._client.ListRuns(ListRunsRequest())
            runs = sorted((run_record(run_from_proto(p)) for p in res.run_dict.values()),
                          key=lambda r: r["pending_at"] or "", reverse=True)
            return {"runs": runs}
        res = self._client.ListNodes(ListNodesRequest())
        return {"nodes": [node_record(n) for n in sorted(res.nodes_info, key=lambda n: n.registered_at)]}

    def get(self, what: str) -> dict[str, Any]:
        """``{"ok": True, "runs"/"nodes": [...]}`` or ``{"ok": False, "error": why}``, at most ``ttl`` old."""
        with self._lock:
            hit = self._cache.get(what)
            if hit and time.monotonic() - hit[0] < self.ttl:
                return hit[1]
            try:
                answer = {"ok": True, **self._call(what)}
            except (Exception, SystemExit) as exc:  # unreachable, refused, no connection: the page says so
                self.close()
                answer = {"ok": False, "error": _message(exc)}
            self._cache[what] = (time.monotonic(), answer)
            return answer

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):  # closing a broken client
                self._client.close()
            self._client = None


def _message(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())[:500]
