"""Linux network namespaces for a deployment whose parties are on separate networks (``ip netns``, veth pairs).

:class:`Star` makes one server namespace and one namespace per hospital, each hospital wired by a veth pair
to the server namespace only (its own /30, no other route), with IP forwarding off in the server namespace:
a hospital can reach the server's addresses and nothing else. :func:`entered` moves the calling thread
into a namespace for a while: the processes it starts (``subprocess`` forks from that thread) and the
sockets it opens live there. Needs root (CAP_SYS_ADMIN) and iproute2; :func:`require` says what is missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")


class NetnsError(RuntimeError):
    """A namespace could not be made, entered or removed; the message says what is missing."""


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise NetnsError(f"setns: {os.strerror(errno)}")


def ip(*args: str, netns: str | None = None) -> str:
    """Run ``ip [-n NETNS] ARGS``; its output, or :class:`NetnsError` with its message."""
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {out.stderr.strip() or f'exit {out.returncode}'}")
    return out.stdout


def require() -> None:
    """:class:`NetnsError` naming what this machine lacks for network namespaces: root, iproute2's ``ip``,
    or the kernel's permission to make one."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces need CAP_SYS_ADMIN; run as root, as CI does)")
    if shutil.which("ip") is None:
        missing.append("the 'ip' command (Debian package iproute2)")
    if missing:
        raise NetnsError("network namespaces unavailable: needs " + " and ".join(missing))
    probe = f"fhprobe{os.getpid()}{secrets.token_hex(2)}"
    try:
        ip("netns", "add", probe)
    except NetnsError as exc:
        raise NetnsError(f"network namespaces unavailable: 'ip netns add' fails here ({exc})") from None
    ip("netns", "del", probe)


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the block with the calling thread in network namespace ``name`` (restored afterwards)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(NETNS_DIR / name, os.O_RDONLY)
    except OSError as exc:
        os.close(own)
        raise NetnsError(f"no network namespace {name}: {exc}") from None
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


def sysctl(netns: str, key: str, value: str | None = None) -> str:
    """Read (and with ``value`` first write) ``/proc/sys/<key with / for .>`` inside ``netns``."""
    path = "/proc/sys/" + key.replace(".", "/")
    if value is not None:
        subprocess.run(["ip", "netns", "exec", netns, "sh", "-c", f"echo {value} > {path}"], check=True, timeout=30)
    out = subprocess.run(["ip", "netns", "exec", netns, "cat", path], capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


@dataclass
class Star:
    """A server namespace and one namespace per hospital, each hospital linked to the server only.

    Hospital number ``i`` (in ``hospitals`` order) has the link 10.250.i.0/30: ``server_ip(name)``
    (10.250.i.1, in the server namespace) and ``hospital_ip(name)`` (10.250.i.2, in its own). Names are
    unique per instance (``prefix``); :meth:`remove` (also on a failed :meth:`make`) deletes every
    namespace, and with it its veth ends.
    """

    hospitals: Sequence[str]
    prefix: str = field(default_factory=lambda: f"fh{os.getpid() % 100000}{secrets.token_hex(2)}")
    made: list[str] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"{self.prefix}-server"

    def namespace(self, hospital: str) -> str:
        return f"{self.prefix}-{hospital}"

    def _index(self, hospital: str) -> int:
        return list(self.hospitals).index(hospital) + 1

    def server_ip(self, hospital: str) -> str:
        return f"10.250.{self._index(hospital)}.1"

    def hospital_ip(self, hospital: str) -> str:
        return f"10.250.{self._index(hospital)}.2"

    def make(self) -> Star:
        try:
            for ns in [self.server, *map(self.namespace, self.hospitals)]:
                ip("netns", "add", ns)
                self.made.append(ns)
                ip("link", "set", "lo", "up", netns=ns)
            if sysctl(self.server, "net.ipv4.ip_forward", "0") != "0":
                raise NetnsError(f"could not turn IP forwarding off in {self.server}")
            for i, name in enumerate(self.hospitals, 1):
                ns, near, far = self.namespace(name), f"h{i}", "uplink"
                ip("link", "add", near, "netns", self.server, "type", "veth", "peer", "name", far, "netns", ns)
                ip("addr", "add", f"{self.server_ip(name)}/30", "dev", near, netns=self.server)
                ip("addr", "add", f"{self.hospital_ip(name)}/30", "dev", far, netns=ns)
                ip("link", "set", near, "up", netns=self.server)
                ip("link", "set", far, "up", netns=ns)
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        """Delete every namespace made (each goes once its last process has exited)."""
        errors = []
        for ns in reversed(self.made):
            try:
                ip("netns", "del", ns)
            except NetnsError as exc:
                errors.append(str(exc))
        self.made.clear()
        if errors:
            raise NetnsError("; ".join(errors))

    def __enter__(self) -> Star:
        return self.make()

    def __exit__(self, *exc: object) -> None:
        self.remove()
