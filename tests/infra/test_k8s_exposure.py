"""Who reaches what (issue 14): on the server the only public port is the fleet proxy's, admitted
from the overlay's required source ranges only; the SuperLink is on loopback; a hospital's pod
sends only to the SuperLink's addresses, DNS and the AWS endpoints in its own VPC."""

from __future__ import annotations

import ipaddress
import re
import shutil

import pytest
import yaml

from launcher.certs import LOOPBACK_SANS

from .conftest import K8S_DIR, TERRAFORM_DIR, run, tf_variable_default
from .k8s_helpers import (
    CLIENT_OVERLAYS,
    HOSPITALS,
    OVERLAYS,
    SERVER_OVERLAYS,
    by_kind,
    flag,
    mount_for,
    mounted_by,
    secret_file,
    server_service,
)

COMPONENT = K8S_DIR / "components" / "fleet-proxy"
TEMPLATE = COMPONENT / "nginx.conf.template"
PROXY = "fleet-proxy"


def vpc_block(index):
    """The VPC CIDR terraform carves for cluster `index` (server 0, hospitals 1..N)."""
    base = ipaddress.ip_network(tf_variable_default("vpc_cidr_base"))
    return list(base.subnets(prefixlen_diff=int(tf_variable_default("vpc_newbits"))))[index]


def local_config(overlay, kind):
    """The local-config object of `kind` an overlay carries (not rendered: read from its files)."""
    for path in sorted((OVERLAYS / overlay).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == kind:
                return doc
    raise AssertionError(f"{overlay}: no {kind} object")


def pod(docs):
    """(pod spec, containers by name) of the SuperLink Deployment."""
    spec = by_kind(docs, "Deployment")["superlink"]["spec"]["template"]["spec"]
    return spec, {c["name"]: c for c in spec["containers"]}


def port_of(container, port):
    """A container port (number) from a number or a port name, else None."""
    for p in container.get("ports", []):
        if port in (p["containerPort"], p.get("name")):
            return p["containerPort"]
    return None


def peers_of(rule, key):
    """The ipBlock CIDRs of a NetworkPolicy rule's peers; fails on any other kind of peer or none."""
    peers = rule.get(key)
    assert peers, f"a rule without `{key}` admits every address: {rule}"
    cidrs = []
    for peer in peers:
        assert set(peer) == {"ipBlock"}, f"only ipBlock peers, got {peer}"
        network = ipaddress.ip_network(peer["ipBlock"]["cidr"])
        assert network.prefixlen >= 8, f"{network} is an open range"
        cidrs.append(network)
    return cidrs


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


# --------------------------------------------------------------------------- server


@pytest.mark.parametrize("overlay", SERVER_OVERLAYS)
def test_public_service_targets_the_fleet_proxy_only(overlay, render):
    docs = render(overlay)
    services = by_kind(docs, "Service")
    assert list(services) == ["superlink"], f"{overlay}: one Service only, got {list(services)}"
    service = server_service(docs)
    _, by_name = pod(docs)
    assert service["spec"]["type"] == "LoadBalancer" and service["spec"]["loadBalancerClass"] == "eks.amazonaws.com/nlb"
    (svc_port,) = service["spec"]["ports"]
    targets = {name for name, c in by_name.items() if port_of(c, svc_port["targetPort"]) is not None}
    assert targets == {PROXY}, f"{overlay}: the Service's port reaches {targets}, not the fleet proxy alone"
    labels = by_kind(docs, "Deployment")["superlink"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    annotations = service["metadata"]["annotations"]
    # The pod's NetworkPolicy sees the hospitals' own addresses only if the NLB preserves them.
    assert (
        "preserve_client_ip.enabled=true"
        in annotations["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"]
    )
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-path"] == "/health"


@pytest.mark.parametrize("overlay", SERVER_OVERLAYS)
def test_fleet_proxy_container_serves_the_template_in_front_of_the_loopback_superlink(overlay, render):
    docs = render(overlay)
    spec, by_name = pod(docs)
    proxy, sl = by_name[PROXY], by_name["superlink"]
    env = env_of(proxy)
    placeholders = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", TEMPLATE.read_text()))
    assert placeholders and placeholders <= set(env), f"{overlay}: no value for {placeholders - set(env)}"
    # envsubst touches only these names (nginx's own $variables stay).
    assert re.fullmatch(env["NGINX_ENVSUBST_FILTER"], "PROXY_LISTEN")
    assert {n for n in env if re.fullmatch(env["NGINX_ENVSUBST_FILTER"], n)} == placeholders
    assert env["SUPERLINK_ADDRESS"] == f"{flag(sl['args'], '--host')}:{flag(sl['args'], '--port')}"
    assert port_of(proxy, "fleet") == int(env["PROXY_LISTEN"].rpartition(":")[2])
    # nginx checks a host name (not an IP SAN); launcher.certs always puts the loopback names in.
    assert env["SUPERLINK_TLS_NAME"] in LOOPBACK_SANS and not re.fullmatch(r"[\d.:]+", env["SUPERLINK_TLS_NAME"])
    for name, key in (("TLS_CERT", "server.crt"), ("TLS_KEY", "server.key"), ("SUPERLINK_CA", "ca.crt")):
        assert secret_file(proxy, spec, env[name]) == ("superlink-tls", key), name
    # The template, from a generated ConfigMap (hash in its name), read-only where the image renders it.
    mount, volume = mount_for(proxy, spec, "/etc/nginx/templates/nginx.conf.template")
    assert mount.get("readOnly") is True
    configmap = by_kind(docs, "ConfigMap")[volume["configMap"]["name"]]
    assert re.fullmatch(r"fleet-proxy-template-[a-z0-9]{10}", configmap["metadata"]["name"])
    assert configmap["data"]["nginx.conf.template"] == TEMPLATE.read_text()
    # Read-only root: the rendered config and nginx's pid/temp files go to emptyDirs of its own.
    for path in ("/etc/nginx/conf.d/nginx.conf", "/tmp/nginx.pid"):
        mount, volume = mount_for(proxy, spec, path)
        assert "emptyDir" in volume and not mount.get("readOnly") and mounted_by(spec, mount["name"]) == {PROXY}
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/health"
    assert proxy["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    repo, _, tag = proxy["image"].partition("/")[2].rpartition(":")
    assert repo == "fedheart/fleet-proxy" and re.fullmatch(r"\d+\.\d+\.\d+(-alpine)?", tag), proxy["image"]


@pytest.mark.parametrize("overlay", SERVER_OVERLAYS)
def test_source_ranges_are_set_and_not_open(overlay, render):
    service = server_service(render(overlay))
    ranges = service["spec"].get("loadBalancerSourceRanges")
    assert ranges, f"{overlay}: the SuperLink's Service needs loadBalancerSourceRanges"
    for cidr in ranges:
        network = ipaddress.ip_network(cidr)
        assert network.prefixlen >= 8, f"{overlay}: {cidr} is an open source range"
    assert ranges == local_config(overlay, "FleetSourceRanges")["loadBalancerSourceRanges"]


@pytest.mark.parametrize("overlay", SERVER_OVERLAYS)
def test_proxy_port_admits_only_the_source_ranges(overlay, render):
    """Ingress to the SuperLink pod: the proxy's port only, from the Service's source ranges and the
    NLB's own subnets (health checks) in the server VPC; nothing else."""
    docs = render(overlay)
    _, by_name = pod(docs)
    policy = by_kind(docs, "NetworkPolicy")["superlink"]
    assert "Ingress" in policy["spec"]["policyTypes"]
    ranges = {ipaddress.ip_network(c) for c in server_service(docs)["spec"].get("loadBalancerSourceRanges", [])}
    rules = policy["spec"]["ingress"]
    assert rules, f"{overlay}: nothing admitted: the NLB could not reach the proxy"
    admitted = set()
    for rule in rules:
        ports = rule.get("ports")
        assert ports and all(port_of(by_name[PROXY], p["port"]) == port_of(by_name[PROXY], "fleet") for p in ports)
        admitted |= set(peers_of(rule, "from"))
    assert ranges <= admitted, f"{overlay}: {ranges - admitted} reach the NLB but not the pod"
    for network in admitted - ranges:
        assert network.subnet_of(vpc_block(0)), f"{overlay}: {network} is neither a source range nor the NLB's"


@pytest.mark.parametrize("overlay", SERVER_OVERLAYS)
def test_server_egress_stays_in_its_vpc(overlay, render):
    policy = by_kind(render(overlay), "NetworkPolicy")["superlink"]
    service_cidr = ipaddress.ip_network(tf_variable_default("service_ipv4_cidr"))
    for rule in policy["spec"]["egress"]:
        for network in peers_of(rule, "to"):
            assert network.subnet_of(vpc_block(0)) or network.subnet_of(service_cidr), f"{overlay}: to {network}"
        ports = {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}
        assert ports <= {(53, "UDP"), (53, "TCP"), (443, "TCP")}, f"{overlay}: {ports}"


def test_internet_overlay_is_an_internet_facing_nlb_on_fixed_addresses(render):
    annotations = server_service(render("server"))["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internet-facing"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"] == "ip"
    allocations = annotations["service.beta.kubernetes.io/aws-load-balancer-eip-allocations"].split(",")
    assert len(allocations) == 2 and all(re.fullmatch(r"eipalloc-[0-9a-f]{8,17}", a) for a in allocations)


def test_peering_overlay_is_an_internal_nlb_open_to_the_hospital_vpcs(render):
    service = server_service(render("server-peering"))
    assert service["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"
    assert service["spec"]["loadBalancerSourceRanges"] == [str(vpc_block(i)) for i in range(1, 1 + len(HOSPITALS))]
    # Everything else is the internet-facing overlay.
    differs = {"Service", "NetworkPolicy"}
    assert [d for d in render("server-peering") if d["kind"] not in differs] == [
        d for d in render("server") if d["kind"] not in differs
    ]


def test_ranges_and_addresses_are_required(tmp_path):
    """Rendering fails without the overlay's source ranges (server) or SuperLink addresses (hospital)."""
    shutil.copytree(K8S_DIR, tmp_path / "k8s")
    for overlay, name, kind in (
        ("server", "source-ranges.yaml", "FleetSourceRanges"),
        (CLIENT_OVERLAYS[0], "superlink-addresses.yaml", "SuperLinkAddresses"),
    ):
        folder = tmp_path / "k8s" / "overlays" / overlay
        kustomization = folder / "kustomization.yaml"
        kustomization.write_text(kustomization.read_text().replace(f"  - {name}\n", ""))
        (folder / name).unlink()
        result = run(["kubectl", "kustomize", str(folder)])
        assert result.returncode != 0, f"{overlay} renders without {name}"
        assert kind in result.stderr, result.stderr


def test_terraform_writes_the_objects_the_components_read():
    """terraform output fleet_source_ranges_yaml / superlink_addresses_yaml give the kind, name and
    fields that the components' replacements read."""
    exposure = (TERRAFORM_DIR / "exposure.tf").read_text()
    for component in ("fleet-proxy", "client-params"):
        spec = yaml.safe_load((K8S_DIR / "components" / component / "kustomization.yaml").read_text())
        for replacement in spec["replacements"]:
            source = replacement["source"]
            if source["kind"] == "ConfigMap":
                continue
            assert f"kind: {source['kind']}\n" in exposure and f"name: {source['name']}\n" in exposure
            assert f"\n    {source['fieldPath']}:\n" in exposure, source


# --------------------------------------------------------------------------- hospitals


@pytest.mark.parametrize("overlay", CLIENT_OVERLAYS)
def test_no_hospital_pod_may_send_to_the_internet(overlay, render):
    """Every pod is under an Egress policy, and every egress rule names its peers: ipBlocks inside the
    hospital's VPC or the Service CIDR, or the SuperLink's own addresses; never 0.0.0.0/0."""
    docs = render(overlay)
    policies = by_kind(docs, "NetworkPolicy").values()
    for name, doc in by_kind(docs, "Deployment").items():
        labels = doc["spec"]["template"]["metadata"]["labels"]
        selecting = [p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
        assert any("Egress" in p["spec"]["policyTypes"] for p in selecting), f"{overlay}/{name}: egress unrestricted"
    destinations = {
        (policy["metadata"]["name"], network)
        for policy in policies
        for rule in policy["spec"].get("egress", [])
        for network in peers_of(rule, "to")  # fails on a rule without peers or with an open range
    }
    hospital_vpc = vpc_block(1 + list(CLIENT_OVERLAYS).index(overlay))
    service_cidr = ipaddress.ip_network(tf_variable_default("service_ipv4_cidr"))
    superlink = {
        ipaddress.ip_network(p["ipBlock"]["cidr"])
        for p in local_config(overlay, "SuperLinkAddresses")["networkPolicyPeers"]
    }
    for name, network in destinations:
        inside = network.subnet_of(hospital_vpc) or network.subnet_of(service_cidr)
        assert inside or network in superlink, f"{overlay}/{name}: to {network}"


@pytest.mark.parametrize("overlay", CLIENT_OVERLAYS)
def test_supernode_egress_is_the_superlink_dns_and_aws_endpoints(overlay, render):
    docs = render(overlay)
    server_port = server_service(render("server"))["spec"]["ports"][0]["port"]
    hospital_vpc = vpc_block(1 + list(CLIENT_OVERLAYS).index(overlay))
    service_cidr = ipaddress.ip_network(tf_variable_default("service_ipv4_cidr"))
    superlink = [
        ipaddress.ip_network(p["ipBlock"]["cidr"])
        for p in local_config(overlay, "SuperLinkAddresses")["networkPolicyPeers"]
    ]
    policy = by_kind(docs, "NetworkPolicy")["supernode"]
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"} and not policy["spec"].get("ingress")
    allowed = {}
    for rule in policy["spec"]["egress"]:
        for p in rule["ports"]:
            allowed.setdefault((p["port"], p.get("protocol", "TCP")), set()).update(peers_of(rule, "to"))
    assert allowed == {
        (server_port, "TCP"): set(superlink),
        (53, "UDP"): {hospital_vpc, service_cidr},
        (53, "TCP"): {hospital_vpc, service_cidr},
        (443, "TCP"): {hospital_vpc},
    }
    # The SuperLink is another party's: never this hospital's own VPC.
    assert superlink and not any(n.subnet_of(hospital_vpc) for n in superlink)
