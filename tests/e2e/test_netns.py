"""Separate networks for real: the SuperLink with its proxy in a server network namespace, each hospital in
its own (launcher.netns.Star: one veth pair from each hospital to the server namespace, nothing else, IP
forwarding off there), made and removed by the test.

The four hospitals (SuperNode and hospital launcher each, as in the shared deployment) complete a one-round
run through the proxy; the SuperLink listens on the server namespace's loopback only, and from a hospital's
namespace there is no route to another hospital (not even through the server), and neither the Control nor
the Runtime API: the proxy refuses both, the SuperLink's port is not reachable. Needs root and ``ip netns``
(CI has both): where they are missing the test fails and says what is missing.
"""

from __future__ import annotations

import errno
import json
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fedheart.schema import HOSPITALS
from launcher import netns
from launcher.deploy import COMPLETED, Deployment
from launcher.proxy import REFUSAL
from tests.e2e.conftest import PERMISSIVE_POLICY, approving, write_policy

pytestmark = pytest.mark.e2e

CONNECT_S = 2.0  # a dropped SYN: long enough on a busy machine, short enough for the budget
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


def request(url: str, context: ssl.SSLContext, method: str = "POST") -> tuple[int, str]:
    req = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method,
                                 headers={"Content-Type": "application/protobuf"})
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def connect_error(host: str, port: int) -> OSError | None:
    """The error a TCP connection to host:port ends with in this thread's namespace (None: it connected)."""
    try:
        socket.create_connection((host, port), timeout=CONNECT_S).close()
    except OSError as exc:
        return exc
    return None


def listeners() -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket in this thread's network namespace (IPv4 and IPv6)."""
    found = set()
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/thread-self/net/{table}").read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            if state == LISTEN:
                address, port = local.split(":")
                packed = bytes.fromhex(address)
                if table == "tcp":
                    host = socket.inet_ntop(socket.AF_INET, packed[::-1])
                else:  # four little-endian 32-bit words
                    host = socket.inet_ntop(socket.AF_INET6, b"".join(packed[i:i + 4][::-1] for i in range(0, 16, 4)))
                found.add((host, int(port, 16)))
    return found


def test_hospitals_on_separate_networks_reach_only_the_proxy(tmp_path: Path, data_dir: Path, app_snapshot: Path,
                                                             approved_app: str) -> None:
    try:
        netns.require()
    except netns.NetnsError as exc:
        pytest.fail(f"{exc}. This test places each party in a Linux network namespace; CI runs it as root.")
    keys = [h.key for h in HOSPITALS]
    files = {h.key: data_dir / h.filename for h in HOSPITALS}
    policies = {key: tmp_path / "policies" / f"{key}.yaml" for key in keys}
    for path in policies.values():
        write_policy(path, approving(PERMISSIVE_POLICY, approved_app))
    with netns.Star(keys) as star, netns.entered(star.server):
        deployment = Deployment(
            tmp_path / "state", files, tmp_path / "outputs", sans=[star.server_ip(k) for k in keys],
            policy=policies, state_root=tmp_path / "hospital-state", launcher="hospital", app_dir=app_snapshot,
            public_host="0.0.0.0", dial={k: star.server_ip(k) for k in keys},
            place=lambda key: netns.entered(star.namespace(key)))
        with deployment:
            assert deployment.link is not None and deployment.proxy is not None and deployment.certs is not None
            run_id, record = deployment.run(["rounds=1", "baselines=false", "output.run_name=e2e-netns"],
                                            stream=False, echo=None, timeout=300)
            assert record["status"] == COMPLETED, record.get("status-details")
            summary = json.loads((deployment.run_dir(run_id, "e2e-netns") / "summary.json").read_text())
            assert set(summary["hospitals"]) == set(keys) and summary["rounds"] == 1
            for key, node in deployment.nodes.items():
                assert node.superlink == f"{star.server_ip(key)}:{deployment.proxy.port}"

            # In the server namespace only the proxy listens beyond loopback; the SuperLink is on 127.0.0.1.
            link_port, proxy_port = deployment.link.port, deployment.proxy.port
            public = {(h, p) for h, p in listeners() if h not in ("127.0.0.1", "::1")}
            assert public == {("0.0.0.0", proxy_port)}, public
            assert ("127.0.0.1", link_port) in listeners()
            context = ssl.create_default_context(cafile=str(deployment.certs.ca_cert))
            assert request(f"https://127.0.0.1:{link_port}/health", context, "GET")[0] == 200  # it is alive

            me, other = keys[0], keys[1]
            with netns.entered(star.namespace(other)):  # something listening on the other hospital's network
                neighbour = socket.create_server(("0.0.0.0", 0))
            try:
                port = neighbour.getsockname()[1]
                assert connect_error(star.hospital_ip(other), port) is None  # reachable from the server side
                with netns.entered(star.namespace(me)):
                    # No route to another hospital ...
                    unreachable = connect_error(star.hospital_ip(other), port)
                    assert unreachable is not None and unreachable.errno == errno.ENETUNREACH, unreachable
                    # ... nor a way through the server, even for two hospitals that add routes to each other
                    # via the server: forwarding is off there.
                    assert netns.sysctl(star.server, "net.ipv4.ip_forward") == "0"
                    netns.ip("route", "add", f"{star.hospital_ip(other)}/32", "via", star.server_ip(me),
                             netns=star.namespace(me))
                    netns.ip("route", "add", f"{star.hospital_ip(me)}/32", "via", star.server_ip(other),
                             netns=star.namespace(other))
                    assert isinstance(connect_error(star.hospital_ip(other), port), TimeoutError)

                    # The proxy: its public port answers, the Fleet API passes, Control and Runtime are refused.
                    proxy = f"https://{star.server_ip(me)}:{proxy_port}"
                    assert request(f"{proxy}/health", context, "GET")[0] == 200
                    status, body = request(f"{proxy}/v1/fleet/pull-messages", context)
                    assert status == 401 and "Invalid SuperNode authentication" in body  # the SuperLink's answer
                    for path in ("/v1/control/list-runs", "/v1/control/start-run", "/v1/control/register-node",
                                 "/v1/runtime/get-nodes", "/v1/runtime/pull-task-input"):
                        status, body = request(proxy + path, context)
                        assert status == 403 and body.startswith(REFUSAL), (path, status, body)
                    # The SuperLink's own port: closed at the server's address, and not on the hospital's loopback.
                    for host in (star.server_ip(me), "127.0.0.1"):
                        assert isinstance(connect_error(host, link_port), ConnectionRefusedError), host
            finally:
                neighbour.close()
