"""`fedheart view` in the server pod (k8s/components/web-view): on loopback, published nowhere, read-only,
reached like the Control API (kubectl port-forward), and wired to the SuperLink beside it."""

from __future__ import annotations

import ipaddress
import re
import sys
import tomllib

import pytest

from .conftest import REPO
from .k8s_helpers import (
    SERVER_OVERLAYS,
    by_kind,
    configmap_file,
    containers,
    flag,
    mount_for,
    parse_cli,
    secret_file,
)


def view_container(docs):
    spec = by_kind(docs, "Deployment")["superlink"]["spec"]["template"]["spec"]
    found = [c for c in containers(spec) if c.get("command") == ["fedheart"] and c.get("args", [])[:1] == ["view"]]
    assert len(found) == 1, "expected one `fedheart view` container in the SuperLink's pod"
    return spec, found[0]


@pytest.mark.parametrize("overlay", SERVER_OVERLAYS)
def test_the_view_listens_on_loopback_and_is_published_nowhere(overlay, render):
    docs = render(overlay)
    _, view = view_container(docs)
    options = parse_cli((sys.executable, "-m", "fedheart_cli", "view"), view["args"][1:])
    assert options.host is not None and ipaddress.ip_address(options.host).is_loopback, options.host
    port = int(options.port)
    assert not view.get("ports"), "the view must not declare a container port"
    for service in by_kind(docs, "Service").values():
        ports = service["spec"]["ports"]
        targets = {p.get("targetPort") for p in ports} | {p["port"] for p in ports}
        assert port not in targets, f"{overlay}: Service {service['metadata']['name']} exposes the view"
    for policy in by_kind(docs, "NetworkPolicy").values():
        for rule in policy["spec"].get("ingress", []):
            assert port not in {p.get("port") for p in rule.get("ports", [])}, f"{overlay}: ingress admits {port}"


@pytest.mark.parametrize("overlay", SERVER_OVERLAYS)
def test_the_view_reads_only_and_holds_no_secret_but_the_ca(overlay, render):
    docs = render(overlay)
    spec, view = view_container(docs)
    options = parse_cli((sys.executable, "-m", "fedheart_cli", "view"), view["args"][1:])
    runs_mount, runs_volume = mount_for(view, spec, options.runs)
    assert runs_mount.get("readOnly") is True, "the run folders must be mounted read-only"
    superexec = {c["name"]: c for c in containers(spec)}["superexec"]
    env = {e["name"]: e.get("value") for e in superexec.get("env", [])}
    _, out_volume = mount_for(superexec, spec, env["FEDHEART_OUTPUT_DIR"])
    assert runs_volume == out_volume, "the view must read the folder the ServerApp writes"
    assert view["securityContext"]["readOnlyRootFilesystem"] is True
    assert view["securityContext"]["allowPrivilegeEscalation"] is False
    for mount in view.get("volumeMounts", []):
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        if "secret" in volume:
            keys = {i["key"] for i in volume["secret"].get("items", [])}
            assert keys == {"ca.crt"}, f"{overlay}: the view mounts secret keys {keys}"


@pytest.mark.parametrize("overlay", SERVER_OVERLAYS)
def test_the_views_flower_connection_is_the_superlink_in_the_pod(overlay, render):
    docs = render(overlay)
    spec, view = view_container(docs)
    options = parse_cli((sys.executable, "-m", "fedheart_cli", "view"), view["args"][1:])
    flwr_home = {e["name"]: e.get("value") for e in view.get("env", [])}["FLWR_HOME"]
    name, key = configmap_file(view, spec, f"{flwr_home}/config.toml")
    (configmap,) = [c for c in by_kind(docs, "ConfigMap").values() if c["metadata"]["name"] == name]
    config = tomllib.loads(configmap["data"][key])
    connection = config["superlink"][options.superlink]
    superlink = {c["name"]: c for c in containers(spec)}["superlink"]
    assert connection["address"] == f"{flag(superlink['args'], '--host')}:{flag(superlink['args'], '--port')}"
    assert "insecure" not in connection
    assert secret_file(view, spec, connection["root-certificates"]) == ("superlink-tls", "ca.crt")


def test_the_runbook_opens_the_view_through_a_port_forward(render):
    _, view = view_container(render("server"))
    port = parse_cli((sys.executable, "-m", "fedheart_cli", "view"), view["args"][1:]).port
    runbook = (REPO / "docs" / "deploy-eks.md").read_text()
    forward = re.search(rf"port-forward deployment/superlink (\d+):{port}\b", runbook)
    assert forward, f"docs/deploy-eks.md: no `kubectl port-forward deployment/superlink LOCAL:{port}` for the view"
    assert f"http://127.0.0.1:{forward.group(1)}/" in runbook
