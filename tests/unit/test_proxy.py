"""The fleet proxy's nginx template (k8s/components/fleet-proxy/nginx.conf.template) and launcher.proxy.

The template is rendered as launcher.proxy renders it and as the nginx image does (envsubst), checked by
nginx itself (``nginx -t``), and run for real in front of a stand-in HTTPS upstream that records every
request it gets: the SuperNode's Fleet calls pass with their headers and bodies unchanged, nothing else
gets through. (The real SuperLink behind it: tests/e2e/test_public_address.py, test_netns.py.)
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from flwr.supercore.protobuf.translation import PROTOBUF_REQUEST_TYPES
from flwr.supernode import fleet_http_client

from launcher.certs import CertBundle, write_bundle
from launcher.flower import TlsFiles, free_port
from launcher.proxy import FLEET_ROUTES, REFUSAL, TEMPLATE, FleetProxy, ProxyError, nginx_binary, placeholders, render

SIGNED_HEADERS = ("flwr-public-key", "flwr-timestamp", "flwr-signature")  # flwr/supernode/node_auth_http_interceptor.py


def values(tmp_path: Path) -> dict[str, str]:
    return {"PROXY_LISTEN": "127.0.0.1:8443", "TLS_CERT": str(tmp_path / "server.crt"),
            "TLS_KEY": str(tmp_path / "server.key"), "SUPERLINK_ADDRESS": "127.0.0.1:9092",
            "SUPERLINK_CA": str(tmp_path / "ca.crt"), "SUPERLINK_TLS_NAME": "localhost"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> CertBundle:
    return write_bundle(tmp_path_factory.mktemp("certs"))


def tls_of(bundle: CertBundle) -> TlsFiles:
    return TlsFiles(bundle.ca_cert, bundle.server_cert, bundle.server_key)


def locations(conf: str) -> list[tuple[str, str]]:
    """Each ``location SPEC { BODY }`` of an nginx configuration (nested blocks inside BODY)."""
    found = []
    for match in re.finditer(r"^\s*location ([^{]+)\{", conf, re.MULTILINE):
        depth, end = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(conf[end], 0)
            end += 1
        found.append((match[1].strip(), conf[match.end():end - 1]))
    return found


def test_fleet_routes_are_exactly_those_flower_serves_and_the_supernode_calls() -> None:
    served = {path for method, path in PROTOBUF_REQUEST_TYPES if path.startswith("/v1/fleet/") and method == "POST"}
    called = set(re.findall(r'path="(/v1/fleet/[a-z-]+)"', Path(fleet_http_client.__file__).read_text()))
    assert set(FLEET_ROUTES) == served == called


def test_the_templates_fleet_location_admits_the_fleet_routes_and_nothing_else(tmp_path: Path) -> None:
    rendered = render(values(tmp_path))
    pattern = re.search(r"location ~ (\S+) \{", rendered)
    assert pattern is not None
    admitted = {path for _, path in PROTOBUF_REQUEST_TYPES if re.fullmatch(pattern[1], path)}
    assert admitted == set(FLEET_ROUTES)
    assert not any(re.fullmatch(pattern[1], p) for p in ("/v1/fleet/pull-messages/", "/v1/fleet/pull-messagesx",
                                                        "/x/v1/fleet/get-run", "/v1/fleet/"))
    # The only other location that forwards is /health, matched exactly.
    forwarding = [spec for spec, body in locations(rendered) if "proxy_pass" in body]
    assert forwarding == [f"~ {pattern[1]}", "= /health"]


def test_render_fills_every_placeholder_and_leaves_nginx_variables(tmp_path: Path) -> None:
    text = TEMPLATE.read_text()
    assert set(placeholders(text)) == set(values(tmp_path))
    rendered = render(values(tmp_path))
    assert "${" not in rendered and "$uri" in rendered
    assert "listen 127.0.0.1:8443 ssl;" in rendered and "server 127.0.0.1:9092;" in rendered


def test_render_matches_envsubst_as_the_nginx_image_runs_it(tmp_path: Path) -> None:
    """The image's entrypoint (20-envsubst-on-templates.sh) passes envsubst the names of the variables
    defined, so nginx's own $variables stay; string.Template must give the same file."""
    given = values(tmp_path)
    env = {**os.environ, **given}
    out = subprocess.run(["envsubst", " ".join(f"${{{k}}}" for k in env)], input=TEMPLATE.read_text(),
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout == render(given)


def test_render_names_a_missing_value_and_refuses_one_that_breaks_the_config(tmp_path: Path) -> None:
    given = values(tmp_path)
    del given["SUPERLINK_CA"]
    with pytest.raises(ProxyError, match=r"nginx\.conf\.template:\d+: no value for \$\{SUPERLINK_CA\}"):
        render(given)
    for bad in ("/a b/ca.crt", "x; include /etc/passwd", "", "$host"):
        with pytest.raises(ProxyError, match="SUPERLINK_CA="):
            render({**values(tmp_path), "SUPERLINK_CA": bad})
    with pytest.raises(ProxyError, match=r"no placeholder \$\{EXTRA\}"):
        render({**values(tmp_path), "EXTRA": "1"})


def test_nginx_accepts_the_rendered_configuration(tmp_path: Path, bundle: CertBundle) -> None:
    proxy = FleetProxy(tmp_path / "proxy", f"127.0.0.1:{free_port()}", tls_of(bundle))
    conf = proxy.write_config()
    out = subprocess.run([nginx_binary(), "-t", "-p", f"{conf.parent}/", "-c", str(conf),
                          "-e", str(conf.parent / "error.log")], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "syntax is ok" in out.stderr


class Recorder(BaseHTTPRequestHandler):
    """The stand-in SuperLink: answers 200 to anything and records what reached it."""

    seen: ClassVar[list[tuple[str, str, dict[str, str], str]]] = []

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Recorder.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                              hashlib.sha256(body).hexdigest()))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def upstream(bundle: CertBundle) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(bundle.server_cert, bundle.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def proxy(upstream: str, bundle: CertBundle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetProxy]:
    running = FleetProxy(tmp_path_factory.mktemp("proxy"), upstream, tls_of(bundle)).start(timeout=30)
    try:
        yield running
    finally:
        running.stop()
    assert running.process is not None and running.process.popen.poll() is not None  # stopped by its starter


def send(proxy: FleetProxy, bundle: CertBundle, path: str, method: str = "POST", body: bytes = b"",
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(bundle.ca_cert))
    request = urllib.request.Request(f"https://{proxy.address}{path}", data=body if method != "GET" else None,
                                     method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_fleet_calls_pass_with_their_signed_headers_and_bodies_unchanged(proxy: FleetProxy,
                                                                         bundle: CertBundle) -> None:
    headers = {"flwr-public-key": "cHVibGlj", "flwr-timestamp": "2026-12-02T00:00:00+00:00",
               "flwr-signature": "c2lnbmF0dXJl", "Content-Type": "application/protobuf"}
    body = os.urandom(3 * 1024 * 1024)  # binary, larger than nginx's default 1 MB limit and its buffers
    for path in FLEET_ROUTES:
        Recorder.seen.clear()
        assert send(proxy, bundle, path, body=body, headers=headers) == (200, b"ok"), path
        [(method, seen_path, seen_headers, digest)] = Recorder.seen
        assert (method, seen_path, digest) == ("POST", path, hashlib.sha256(body).hexdigest())
        assert {k: seen_headers.get(k) for k in SIGNED_HEADERS} == {k: headers[k] for k in SIGNED_HEADERS}
    Recorder.seen.clear()
    assert send(proxy, bundle, "/health", method="GET") == (200, b"ok")
    assert [(m, p) for m, p, _, _ in Recorder.seen] == [("GET", "/health")]


def test_everything_else_is_refused_and_never_reaches_the_superlink(proxy: FleetProxy, bundle: CertBundle) -> None:
    others = sorted(path for _, path in PROTOBUF_REQUEST_TYPES if not path.startswith("/v1/fleet/"))
    tricks = ["/v1/fleet/../control/start-run", "/v1/fleet/%2e%2e/control/start-run", "/v1/fleet/get-run/",
              "/v1/fleet/get-run%2F..%2F..%2Fcontrol%2Fstart-run", "/v1/fleet", "/V1/fleet/get-run", "/", "/docs"]
    Recorder.seen.clear()
    for path in others + tricks:
        status, body = send(proxy, bundle, path)
        assert status == 403 and body.decode().startswith(REFUSAL), (path, status, body)
    for method in ("GET", "PUT"):
        status, body = send(proxy, bundle, "/v1/fleet/pull-messages", method=method)
        assert status == 403 and body.decode().startswith(REFUSAL), method
    assert send(proxy, bundle, "/health", method="POST")[0] == 403
    assert Recorder.seen == []
