"""Server overlays: the SuperLink on the pod's loopback, its SuperExec sidecar (the ServerApp), state
and outputs on PVCs, nothing of any hospital's."""

from __future__ import annotations

import ipaddress

import pytest

from .k8s_helpers import (
    OVERLAYS,
    SERVER_OVERLAYS,
    by_kind,
    containers,
    flag,
    mount_for,
    pod_specs,
    runs_launcher,
    secret_file,
)


@pytest.mark.parametrize("overlay", SERVER_OVERLAYS)
def test_superlink_serves_tls_on_loopback_only(overlay, render):
    """The SuperLink's one port (Fleet, Control and Runtime APIs) is bound to 127.0.0.1 and published
    nowhere: no container port, no Service; the kubelet asks its health server instead."""
    docs = render(overlay)
    spec = by_kind(docs, "Deployment")["superlink"]["spec"]["template"]["spec"]
    sl = {c["name"]: c for c in spec["containers"]}["superlink"]
    args = sl["args"]
    host, port = flag(args, "--host"), int(flag(args, "--port"))
    assert host is not None and ipaddress.ip_address(host).is_loopback, f"{overlay}: --host {host} is not loopback"
    assert port not in {p["containerPort"] for c in containers(spec) for p in c.get("ports", [])}, (
        f"{overlay}: the SuperLink's API port {port} is a container port"
    )
    health = flag(args, "--health-server-address")
    health_port = int(health.rpartition(":")[2])
    assert health_port != port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert sl[probe]["grpc"]["port"] == health_port, probe
    for service in by_kind(docs, "Service").values():
        for svc_port in service["spec"]["ports"]:
            assert svc_port["targetPort"] not in (port, "superlink"), f"{overlay}: Service targets the SuperLink"

    # TLS and SuperNode authentication, files from the superlink-tls Secret.
    assert "--insecure" not in args and "--enable-supernode-auth" in args
    for flag_name, key in (
        ("--ssl-ca-certfile", "ca.crt"),
        ("--ssl-certfile", "server.crt"),
        ("--ssl-keyfile", "server.key"),
    ):
        assert secret_file(sl, spec, flag(args, flag_name)) == ("superlink-tls", key)
    # State on a persistent volume.
    _, volume = mount_for(sl, spec, flag(args, "--database"))
    assert volume["persistentVolumeClaim"]["claimName"] in by_kind(docs, "PersistentVolumeClaim")
    assert "--disable-runtime-dependency-installation" in args


@pytest.mark.parametrize("overlay", SERVER_OVERLAYS)
def test_serverapp_runs_in_the_superexec_sidecar(overlay, render):
    docs = render(overlay)
    spec = by_kind(docs, "Deployment")["superlink"]["spec"]["template"]["spec"]
    by_name = {c["name"]: c for c in spec["containers"]}
    sl, se = by_name["superlink"], by_name["superexec"]
    port = flag(sl["args"], "--port")
    assert flag(sl["args"], "--isolation") == "process"
    # Same pod: the sidecar dials the SuperLink on loopback (a SAN of the server certificate).
    assert flag(se["args"], "--runtime-api-address") == f"127.0.0.1:{port}"
    assert "--insecure" not in se["args"]
    assert secret_file(se, spec, flag(se["args"], "--root-certificates")) == ("superlink-tls", "ca.crt")
    # The sidecar may only see the CA certificate, not the server key.
    for mount in se["volumeMounts"]:
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        if "secret" in volume and volume["secret"]["secretName"] == "superlink-tls":
            assert [i["key"] for i in volume["secret"]["items"]] == ["ca.crt"]
    # Both sides share the SuperExec secret (the Runtime API is on the public port).
    assert secret_file(sl, spec, flag(sl["args"], "--superexec-auth-secret-file")) == secret_file(
        se, spec, flag(se["args"], "--superexec-auth-secret-file")
    )
    # Final models land on a persistent volume at /app/outputs (kubectl cp target in the docs).
    output_dir = {e["name"]: e.get("value") for e in se["env"]}["FEDHEART_OUTPUT_DIR"]
    assert output_dir == "/app/outputs"
    mount, volume = mount_for(se, spec, f"{output_dir}/run/final_model.pt")
    assert "persistentVolumeClaim" in volume and not mount.get("readOnly")


@pytest.mark.parametrize("overlay", SERVER_OVERLAYS)
def test_server_mounts_no_hospital_policy(overlay, render):
    """A hospital's policy lives only in its own cluster: nothing of it in the aggregator's render."""
    docs = render(overlay)
    assert not [n for n in by_kind(docs, "ConfigMap") if n.startswith("fedheart-policy")]
    for name, spec in pod_specs(docs):
        for volume in spec.get("volumes", []):
            configmap = volume.get("configMap", {}).get("name", "")
            assert not configmap.startswith("fedheart-policy"), f"{overlay}/{name}: mounts {configmap}"
        for c in containers(spec):
            text = " ".join(c.get("args", []) + c.get("command", []))
            assert "policy-path" not in text and "state-dir" not in text, f"{overlay}/{name}/{c['name']}"
            assert not any(m["mountPath"].startswith("/etc/fedheart") for m in c.get("volumeMounts", []))
    assert not list((OVERLAYS / overlay).rglob("policy.yaml"))


@pytest.mark.parametrize("overlay", SERVER_OVERLAYS)
def test_server_overlays_run_no_hospital_launcher(overlay, render):
    """The launcher is the hospital's: the aggregator runs Flower's SuperExec for its ServerApp only."""
    for name, spec in pod_specs(render(overlay)):
        for c in containers(spec):
            assert c["name"] != "launcher" and not runs_launcher(c), f"{overlay}/{name}/{c['name']}"
            assert "approved-apps" not in " ".join(c.get("args", []))
