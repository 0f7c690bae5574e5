"""The runbook (docs/deploy-eks.md) against the manifests: secrets it creates, paths and commands it
names, one SuperLink address per overlay."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import DOCS, K8S_DIR, REPO
from .k8s_helpers import (
    CLIENT_OVERLAYS,
    OVERLAYS,
    by_kind,
    external_secrets,
    flag,
    launcher,
    launcher_options,
    node_config,
    supernode,
)


def test_external_secrets_are_created_in_the_docs():
    docs = DOCS.read_text()
    for _, name, keys in external_secrets():
        commands = re.findall(rf"kubectl [^\n]*create secret generic {re.escape(name)}\b(?:[^\n]*\\\n)*[^\n]*", docs)
        assert commands, f"docs/deploy-eks.md has no `kubectl create secret generic {name}`"
        for key in keys:
            assert any(re.search(rf"--from-(?:file|literal)={re.escape(key)}=", c) for c in commands), (
                f"{name}: key {key}"
            )


def test_docs_name_the_policy_and_state_paths(render):
    """The runbook's "Hospital policy and state" section uses the paths the manifests mount."""
    docs = DOCS.read_text()
    section = re.search(r"^## [^\n]*Hospital policy and state\n(.*?)(?=^## )", docs, re.S | re.M)
    assert section, 'docs/deploy-eks.md has no "Hospital policy and state" section'
    docs_render = render(CLIENT_OVERLAYS[0])
    _, _, args = supernode(docs_render)
    _, lc, _ = launcher(docs_render)
    pairs = node_config(args)
    text = section.group(1)
    assert pairs["policy-path"] in text and "policy.yaml" in text
    # The state folder is mounted in the launcher's container only: the commands must exec there.
    container = rf"deployment/supernode -c {re.escape(lc['name'])} --"
    for command in ("fedheart audit verify", "fedheart audit show", "fedheart budget"):
        assert re.search(rf"{container}\s+(?:\\\n\s*)?{command} {re.escape(pairs['state-dir'])}\b", text), command
    assert not re.search(r"exec deployment/supernode --", docs), "kubectl exec without -c picks the wrong container"


def test_docs_explain_the_launcher_and_approving_a_release(render):
    """The runbook explains the sidecar, how a hospital approves a release hash (edit its overlay's
    policy.yaml, kustomize regenerates the ConfigMap and rolls the pod) and what a refusal looks like."""
    docs = DOCS.read_text()
    section = re.search(r"^## [^\n]*Approve a release[^\n]*\n(.*?)(?=^## )", docs, re.S | re.M)
    assert section, 'docs/deploy-eks.md has no "Approve a release" section'
    text = section.group(1)
    docs_render = render(CLIENT_OVERLAYS[0])
    _, lc, args = launcher(docs_render)
    options = launcher_options(args)
    assert "launcher.hospital" in text and "--isolation process" in text
    assert options.runtime_api_address in text, "name the Runtime API address the launcher dials"
    assert "python -m launcher.fab ." in text and "approved-apps" in text
    assert re.search(r"kubectl [^\n]*apply -k k8s/overlays/client-", text)
    assert "fedheart check-policy" in text and "rollout status deployment/supernode" in text
    assert re.search(rf"-c {re.escape(lc['name'])} -- fedheart audit show {re.escape(str(options.state_dir))}", text)
    assert re.search(r"logs deployment/supernode -c " + re.escape(lc["name"]), text)
    # What a refusal looks like: the reason the launcher sends and audits, verbatim.
    phrase = "is not in its policy's approved-apps"
    sources = "".join(f.read_text() for f in (REPO / "launcher").rglob("*.py"))
    assert f"refused by the hospital: app {{digest}} {phrase}" in sources, "the launcher's refusal reason changed"
    assert "refused by the hospital: app <hash> " + phrase in " ".join(text.split())
    assert re.search(r"\brefused \(refused by the hospital: app [0-9a-f]{64} is not in", text), (
        "show a `fedheart audit show` line of a refused app"
    )


def test_superlink_address_is_set_in_one_place_per_overlay():
    for overlay in CLIENT_OVERLAYS:
        hits = [
            p.relative_to(K8S_DIR)
            for p in (OVERLAYS / overlay).rglob("*")
            if p.is_file() and "SUPERLINK_ADDRESS:" in p.read_text()
        ]
        assert hits == [Path("overlays", overlay, "params.yaml")], hits
    # ...and every hospital points at the same SuperLink.
    addresses = {
        re.search(r"SUPERLINK_ADDRESS: (\S+)", (OVERLAYS / o / "params.yaml").read_text()).group(1)
        for o in CLIENT_OVERLAYS
    }
    assert len(addresses) == 1


def test_security_checklist_names_tests_that_exist():
    """docs/security.md's HIPAA checklist names its tests as FILE::NAME: each must exist (a Python test
    function, or a `run` of a terraform test file)."""
    text = (REPO / "docs" / "security.md").read_text()
    section = re.search(r"^## HIPAA technical safeguards.*?(?=^## |\Z)", text, re.S | re.M)
    assert section, 'docs/security.md has no "HIPAA technical safeguards" section'
    named = re.findall(r"((?:tests|terraform/tests)/[\w/.-]+)::(\w+)", section.group(0))
    assert len(named) >= 10, named
    for path, name in named:
        source = (REPO / path).read_text()
        pattern = rf'^run "{name}"' if path.endswith(".tftest.hcl") else rf"^def {name}\("
        assert re.search(pattern, source, re.M), f"docs/security.md names {path}::{name}, which does not exist"
    for safeguard in (
        "Access control",
        "Audit controls",
        "Integrity",
        "Person or entity authentication",
        "Transmission security",
    ):
        assert re.search(rf"^\| {safeguard}", section.group(0), re.M), safeguard


def test_runbook_reaches_the_control_api_through_a_port_forward(render):
    """The operator's flwr connection is a port-forward to the SuperLink's loopback port (never the
    public address), and the runbook writes the required source ranges and SuperLink addresses."""
    docs = DOCS.read_text()
    spec = by_kind(render("server"), "Deployment")["superlink"]["spec"]["template"]["spec"]
    (sl,) = [c for c in spec["containers"] if c["name"] == "superlink"]
    port = flag(sl["args"], "--port")
    forward = re.search(rf"port-forward deployment/superlink (\d+):{port}\b", docs)
    assert forward, f"docs/deploy-eks.md: no `kubectl port-forward deployment/superlink LOCAL:{port}`"
    assert f'address = "127.0.0.1:{forward.group(1)}"' in docs, "the eks connection must use the port-forward"
    assert not re.search(r'address = "\$SUPERLINK_HOST', docs), "the eks connection must not use the public address"
    for overlay in ("server", "server-peering"):
        assert f"output -raw fleet_source_ranges_yaml > k8s/overlays/{overlay}/source-ranges.yaml" in docs
    assert re.search(r"output -raw superlink_addresses_yaml > k8s/overlays/client-\$H/superlink-addresses.yaml", docs)
    assert "cluster_admins" in docs and "endpoint_public_access_cidrs" in docs and "party_accounts" in docs
