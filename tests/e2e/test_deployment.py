"""The real local deployment: a TLS SuperLink with SuperNode authentication, its fleet proxy, four SuperNodes.

One deployment (launcher.deploy.Deployment, the session fixture ``deployment`` of tests/e2e/conftest.py,
shared with test_faults.py and test_policy_deployment.py) serves the whole module: a 2-round run of the four
UCI hospitals under their permissive policies (the app's hash approved by each hospital's launcher, every
message run in a forked process of its own, accepted and audited), and the security checks
(issue 6): a plaintext client, a SuperNode with an unregistered key and a SuperNode that does not trust the
project CA are all refused. Every SuperNode here, the hospitals' and the intruders', dials the fleet proxy
(launcher.proxy); what the proxy refuses is in test_public_address.py.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from fedheart.safeguard import audit
from fedheart.schema import HOSPITALS
from launcher.certs import write_bundle
from launcher.deploy import COMPLETED, Deployment
from launcher.flower import SuperNode, list_supernodes

pytestmark = pytest.mark.e2e

REFUSED_WITHIN_S = 120  # generous: a SuperNode's start-up alone takes ~10 s on a busy 2-core machine
FLOWER_CONNECTION_ERROR = "Exit Code: 305"  # flower-supernode logs Flower's code; the process exits 1


@dataclass
class Refused:
    node: SuperNode
    exit_code: int

    @property
    def log(self) -> str:
        assert self.node.process is not None
        return self.node.process.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def intruders(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Refused]]:
    """Three SuperNodes that must be turned away, started together, each awaited with a deadline."""
    assert deployment.proxy is not None and deployment.certs is not None
    work = tmp_path_factory.mktemp("intruders")
    unregistered = write_bundle(work / "unregistered", hospitals=["intruder"]).nodes["intruder"]
    other_ca = write_bundle(work / "other-ca")
    address, ca = deployment.proxy.address, deployment.certs.ca_cert
    config = {"data-path": str(deployment.data_files["cleveland"]), "hospital": "cleveland"}
    nodes = {
        # A key pair the SuperLink was never told about.
        "unregistered": SuperNode(work / "n1", address, config, ca, unregistered.private_key, name="unregistered"),
        # A registered key, but the node trusts another CA than the one that signed the server.
        "untrusting": SuperNode(work / "n2", address, config, other_ca.ca_cert,
                                deployment.certs.nodes["cleveland"].private_key, name="untrusting"),
        # Plaintext HTTP to the TLS port (no key: a key without TLS is refused locally, exit 303).
        "plaintext": SuperNode(work / "n3", address, config, None, None, name="plaintext", max_retries=2),
    }
    try:
        for node in nodes.values():
            node.start()
        yield {name: Refused(node, node.wait_exit(REFUSED_WITHIN_S)) for name, node in nodes.items()}
    finally:
        for node in nodes.values():
            node.stop()


def test_four_hospitals_two_rounds_over_tls_completes_and_beats_majority(deployment: Deployment) -> None:
    run_id, record = deployment.run(["rounds=2", "output.run_name=e2e-deploy"], stream=False, echo=None,
                                    timeout=600)
    assert record["status"] == COMPLETED, record.get("status-details")
    run_dir = deployment.run_dir(run_id, "e2e-deploy")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["hospitals"]) == {h.key for h in HOSPITALS}  # named by each node's own node config
    assert summary["rounds"] == 2
    assert summary["means"]["accuracy"] > summary["means"]["majority-accuracy"]
    assert summary["means"]["auc"] > 0.5
    # Each SuperNode was given exactly its own file, its own policy file and state folder, and nothing else.
    for name, node in deployment.nodes.items():
        assert node.node_config == {"data-path": str(deployment.data_files[name]), "hospital": name,
                                    "policy-path": str(deployment.policies[name]),
                                    "state-dir": str(deployment.state_dirs[name])}
    # Under the shared deployment's permissive policy every message was accepted and audited.
    lines, intact = deployment.safeguards(run_id)
    assert intact, lines
    for name, state in deployment.state_dirs.items():
        kinds = sorted(e["message"] for e in audit.entries(state, run_id) if e["decision"] == "accepted")
        assert kinds == ["evaluate", "evaluate", "query.baseline", "query.stats", "train", "train"], (name, kinds)
        # The hospital's launcher approved the app's hash and ran each message in a child of its own.
        launcher = deployment.launchers[name]
        assert deployment.nodes[name].isolation == "process"
        assert f"app {deployment.app_hash} approved, forking" in launcher.log_path.read_text()
        tasks = [t for t in launcher.tasks() if t.run == run_id]
        assert sorted(t.message for t in tasks) == kinds and len({t.pid for t in tasks}) == len(tasks), tasks


def test_plaintext_clients_are_refused_by_the_tls_superlink(deployment: Deployment,
                                                            intruders: dict[str, Refused]) -> None:
    assert deployment.proxy is not None and deployment.certs is not None
    refused = intruders["plaintext"]
    assert refused.exit_code != 0
    assert FLOWER_CONNECTION_ERROR in refused.log
    assert "Failed to initialize the connection to the SuperLink" in refused.log
    # The same port answers HTTPS for a client trusting the CA, and nothing over plain HTTP.
    https = ssl.create_default_context(cafile=str(deployment.certs.ca_cert))
    with urllib.request.urlopen(f"https://{deployment.proxy.address}/health", timeout=10, context=https) as ok:
        assert ok.status == 200
    with pytest.raises((OSError, http.client.HTTPException)):  # URLError (nginx's 400 is an HTTPError) and resets
        urllib.request.urlopen(f"http://{deployment.proxy.address}/health", timeout=10)


def test_supernode_with_unregistered_key_is_refused(deployment: Deployment, intruders: dict[str, Refused]) -> None:
    assert deployment.link is not None and deployment.link.process is not None
    refused = intruders["unregistered"]
    assert refused.exit_code != 0
    assert FLOWER_CONNECTION_ERROR in refused.log
    assert "Failed to activate SuperNode" in refused.log
    assert "No SuperNode found with the given public key" in deployment.link.process.log_tail(200_000)
    # Only the four registered hospitals are known to the SuperLink.
    assert {str(n["node-id"]) for n in list_supernodes(deployment.link)} == set(deployment.node_ids.values())


def test_supernode_that_does_not_trust_the_ca_refuses_to_connect(intruders: dict[str, Refused]) -> None:
    refused = intruders["untrusting"]
    assert refused.exit_code != 0
    assert FLOWER_CONNECTION_ERROR in refused.log
    assert "CERTIFICATE_VERIFY_FAILED" in refused.log
