"""The shared deployment's public address (its fleet proxy, launcher.proxy) serves the SuperNodes only.

Against the session fixture ``deployment`` of tests/e2e/conftest.py, whose four SuperNodes dial the proxy
(every run of the e2e modules trains through it): from the public address the operator's ``flwr ls``,
``flwr run`` and ``flwr supernode register`` fail, and every Control and Runtime API route Flower 1.42
knows is refused by the proxy (403) without reaching the SuperLink; the same commands work on the
SuperLink's loopback address, where the SuperLink alone listens.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from flwr.supercore.protobuf.translation import PROTOBUF_REQUEST_TYPES

from launcher.certs import write_bundle
from launcher.deploy import Deployment
from launcher.flower import REPO_ROOT, flower_env, tool
from launcher.proxy import REFUSAL

pytestmark = pytest.mark.e2e

PUBLIC = "public"  # the flwr connection an outsider would write for the proxy's address


def post(url: str, context: ssl.SSLContext, method: str = "POST") -> tuple[int, str]:
    """Status and body of an empty protobuf request."""
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method,
                                     headers={"Content-Type": "application/protobuf"})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def flwr_public(home: Path, *args: str) -> tuple[int, str]:
    """``flwr ARGS public --format json`` (exit code, output) with the connection ``public``."""
    out = subprocess.run([tool("flwr"), *args, PUBLIC, "--format", "json"], env=flower_env(home), cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    return out.returncode, out.stdout + out.stderr


def reached(deployment: Deployment, paths: tuple[str, ...]) -> dict[str, int]:
    """How many requests for each path the SuperLink has answered so far (its uvicorn access log)."""
    assert deployment.link is not None and deployment.link.process is not None
    log = deployment.link.process.log_path.read_text(errors="replace")
    return {path: log.count(f'"POST {path} HTTP/1.1"') for path in paths}


def refused(code: int, output: str) -> bool:
    """Whether a ``flwr --format json`` command failed (Flower exits non-zero or answers success false)."""
    try:
        answer = json.loads(output[output.index("{"):output.rindex("}") + 1])
    except ValueError:
        answer = {}
    return code != 0 or answer.get("success") is False


@pytest.fixture(scope="module")
def outsider(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A $FLWR_HOME whose connection ``public`` points at the proxy with the project CA (all an outsider needs)."""
    assert deployment.proxy is not None and deployment.certs is not None
    home = tmp_path_factory.mktemp("outsider-flwr-home")
    (home / "config.toml").write_text(f'[superlink]\ndefault = "{PUBLIC}"\n\n[superlink.{PUBLIC}]\n'
                                      f'address = "{deployment.proxy.address}"\n'
                                      f'root-certificates = "{deployment.certs.ca_cert}"\n')
    return home


def test_the_superlink_listens_on_loopback_only_and_the_supernodes_dial_the_proxy(deployment: Deployment) -> None:
    assert deployment.link is not None and deployment.link.process is not None and deployment.proxy is not None
    listening = [c.laddr for c in psutil.Process(deployment.link.process.popen.pid).net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
    assert deployment.link.port in {addr.port for addr in listening}
    for name, node in deployment.nodes.items():
        assert node.superlink == deployment.fleet_address(name) == deployment.proxy.address


def test_operator_commands_are_refused_at_the_public_address(deployment: Deployment, outsider: Path,
                                                             tmp_path: Path) -> None:
    assert deployment.link is not None and deployment.link.process is not None and deployment.proxy is not None
    calls = ("/v1/control/list-runs", "/v1/control/start-run", "/v1/control/register-node")
    before = reached(deployment, calls)
    key = write_bundle(tmp_path / "stranger", hospitals=["stranger"]).nodes["stranger"].public_key
    attempts = {
        "ls": flwr_public(outsider, "ls"),
        "run": flwr_public(outsider, "run", str(deployment.app_dir)),
        "supernode register": flwr_public(outsider, "supernode", "register", str(key)),
    }
    for command, (code, output) in attempts.items():
        assert refused(code, output), f"flwr {command} worked at the public address: {output[-2000:]}"
        assert "403 Forbidden" in output, (command, output[-2000:])
    log = deployment.proxy.access_log()
    for path in calls:
        assert f'"POST {path} HTTP/1.1" 403' in log, path
    # None of them reached the SuperLink (its own access log), so no run started and no key was registered.
    assert reached(deployment, calls) == before


def test_every_control_and_runtime_route_is_refused_by_the_proxy(deployment: Deployment) -> None:
    assert deployment.proxy is not None and deployment.certs is not None and deployment.link is not None
    context = ssl.create_default_context(cafile=str(deployment.certs.ca_cert))
    public, loopback = f"https://{deployment.proxy.address}", f"https://{deployment.link.address}"
    closed = sorted(path for _, path in PROTOBUF_REQUEST_TYPES if not path.startswith("/v1/fleet/"))
    assert any(p.startswith("/v1/control/") for p in closed) and any(p.startswith("/v1/runtime/") for p in closed)
    odd = ["/v1/control", "/v1/runtime/", "/v1/fleet/../control/list-runs", "/v1/fleet/%2e%2e/control/list-runs",
           "/v1/fleet/get-run/../../control/start-run", "/v1/fleet/unknown", "/", "/docs", "/openapi.json"]
    for path in closed + odd:
        status, body = post(public + path, context)
        assert status == 403 and body.startswith(REFUSAL), (path, status, body[:200])
    # A Fleet path by another method than Flower's POST is refused too.
    status, body = post(public + "/v1/fleet/pull-messages", context, method="GET")
    assert status == 403 and body.startswith(REFUSAL)
    # The Fleet API and /health do pass: the SuperLink itself answers (an unsigned Fleet call is unauthorised).
    status, body = post(public + "/v1/fleet/pull-messages", context)
    assert status == 401 and "Invalid SuperNode authentication" in body, (status, body)
    assert post(public + "/health", context, method="GET")[0] == 200
    # Behind the proxy the SuperLink serves the Control API: the refusals above are the proxy's doing.
    status, body = post(loopback + "/v1/control/list-runs", context)
    assert status != 403 and not body.startswith(REFUSAL), (status, body)
