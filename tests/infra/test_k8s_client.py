"""Hospital overlays: the SuperNode (--isolation process, loopback Runtime API) and, in its pod, the
hospital's launcher; its policy (read-only ConfigMap), data (read-only) and state (read-write PVC)."""

from __future__ import annotations

import ipaddress
import re

import pytest

from .conftest import K8S_DIR
from .k8s_helpers import (
    CLIENT_OVERLAYS,
    OVERLAYS,
    by_kind,
    configmap_file,
    containers,
    flag,
    launcher,
    launcher_options,
    mount_for,
    mounted_by,
    node_config,
    pod_specs,
    secret_file,
    server_service,
    supernode,
    supernode_options,
)


@pytest.mark.parametrize("overlay", CLIENT_OVERLAYS)
def test_supernode_dials_the_superlink_port(overlay, render):
    docs = render(overlay)
    server_port = server_service(render("server"))["spec"]["ports"][0]["port"]
    spec, sn, args = supernode(docs)
    host, _, port = flag(args, "--superlink").rpartition(":")
    assert host and "/" not in host and int(port) == server_port
    assert "--insecure" not in args
    assert secret_file(sn, spec, flag(args, "--root-certificates")) == ("superlink-ca", "ca.crt")
    assert secret_file(sn, spec, flag(args, "--auth-supernode-private-key")) == ("supernode-auth", "node.key")
    assert not any("allow-runtime-dependency-installation" in a for a in args)
    supernode_options(args)  # flower-supernode's own parser accepts every flag


@pytest.mark.parametrize("overlay", CLIENT_OVERLAYS)
def test_supernode_runs_in_process_isolation_with_a_loopback_runtime_api(overlay, render):
    """--isolation process: the SuperNode starts no SuperExec of its own (which would run every app);
    its Runtime API (--host/--port in 1.42) stays on the pod's loopback, unexposed."""
    spec, _, args = supernode(render(overlay))
    options = supernode_options(args)
    assert options.isolation == "process", f"{overlay}: the SuperNode must run with --isolation process"
    assert flag(args, "--isolation") == "process"
    host = flag(args, "--host")
    assert host is not None and ipaddress.ip_address(host).is_loopback, (
        f"{overlay}: the Runtime API must listen on loopback (--host 127.0.0.1), got --host {host}"
    )
    port = int(options.port)
    assert flag(args, "--port") is not None, f"{overlay}: pin the Runtime API port (--port) for the launcher"
    # Not published: no container port, and not the health server's port.
    for c in containers(spec):
        assert port not in {p["containerPort"] for p in c.get("ports", [])}, f"{overlay}/{c['name']}: exposes {port}"
    health = flag(args, "--health-server-address")
    assert health is None or int(health.rpartition(":")[2]) != port
    # Nothing but the launcher takes tasks: no Flower SuperExec anywhere in the pod.
    for c in containers(spec):
        words = " ".join([c["image"], *c.get("command", []), *c.get("args", [])])
        assert "superexec" not in words.replace("superexec-auth", ""), f"{overlay}/{c['name']}: a SuperExec"


@pytest.mark.parametrize("overlay", CLIENT_OVERLAYS)
def test_launcher_sidecar_polls_the_supernode_runtime_api(overlay, render):
    """A second container of the SuperNode's pod runs ``python -m launcher.hospital`` against the
    SuperNode's loopback Runtime API, from the same app image (torch, opacus, the hospital's fedheart)."""
    docs = render(overlay)
    spec, sn, sn_args = supernode(docs)
    _, lc, args = launcher(docs)
    assert lc in spec["containers"] and lc is not sn, f"{overlay}: the launcher must be a container of the pod"
    assert lc["name"] == "launcher"
    # The image's entrypoint is flower-supernode: the container must replace it.
    assert lc.get("command") == ["python", "-m", "launcher.hospital"], lc.get("command")
    options = launcher_options(args)
    runtime_api = f"{flag(sn_args, '--host')}:{int(supernode_options(sn_args).port)}"
    assert options.runtime_api_address == runtime_api, (
        f"{overlay}: the launcher dials {options.runtime_api_address}, the SuperNode's Runtime API is {runtime_api}"
    )
    # The Runtime API speaks TLS only with --ssl-certfile; then the launcher needs its CA.
    if flag(sn_args, "--ssl-certfile") is None:
        assert options.insecure, f"{overlay}: the SuperNode's Runtime API is plain HTTP: --insecure"
    else:
        assert options.root_certificates is not None and not options.insecure
    # A SuperExec secret only works when both sides hold the same one.
    sn_secret, lc_secret = flag(sn_args, "--superexec-auth-secret-file"), options.superexec_auth_secret_file
    assert (sn_secret is None) == (lc_secret is None)
    if sn_secret is not None:
        assert secret_file(sn, spec, sn_secret) == secret_file(lc, spec, str(lc_secret))
    # Same image as the SuperNode: ours, with the app's runtime stack (tests/infra/test_images.py).
    assert lc["image"] == sn["image"] and "/fedheart/supernode:" in lc["image"]
    assert options.preload != "none", f"{overlay}: the warm parent should preload the app's stack"


@pytest.mark.parametrize("overlay", CLIENT_OVERLAYS)
def test_launcher_reads_the_policy_read_only_and_writes_the_state_on_the_pvc(overlay, render):
    """--policy and --state-dir are the node-config's policy-path and state-dir (one audit trail, one
    lock), and the ClientApp runs in the launcher container: its data, policy and state are mounted
    there (data and policy read-only, state read-write on the hospital's PVC); the network-facing
    SuperNode container sees none of them."""
    docs = render(overlay)
    spec, sn, sn_args = supernode(docs)
    _, lc, args = launcher(docs)
    options = launcher_options(args)
    pairs = node_config(sn_args)
    assert str(options.policy) == pairs["policy-path"], f"{overlay}: --policy {options.policy} != policy-path"
    assert str(options.state_dir) == pairs["state-dir"], f"{overlay}: --state-dir {options.state_dir} != state-dir"

    mount, _ = mount_for(lc, spec, pairs["policy-path"])
    assert mount.get("readOnly") is True, f"{overlay}: the launcher must mount the policy read-only, got {mount}"
    name, _ = configmap_file(lc, spec, pairs["policy-path"])
    assert re.fullmatch(r"fedheart-policy-[a-z0-9]{10}", name) and name in by_kind(docs, "ConfigMap"), name

    mount, volume = mount_for(lc, spec, pairs["state-dir"])
    claim = volume.get("persistentVolumeClaim")
    assert claim and claim["claimName"] == "fedheart-data", f"{overlay}: the launcher's state is not on the PVC"
    assert not mount.get("readOnly") and not claim.get("readOnly"), f"{overlay}: the launcher's state is read-only"
    assert mount.get("subPath") == "state"

    mount, volume = mount_for(lc, spec, pairs["data-path"])
    assert mount.get("readOnly") is True and volume["persistentVolumeClaim"]["claimName"] == "fedheart-data"

    for path in (pairs["data-path"], pairs["policy-path"], pairs["state-dir"]):
        with pytest.raises(AssertionError, match="is not on a volume"):
            mount_for(sn, spec, path)
    for c in containers(spec):
        if c is not lc:
            for m in c.get("volumeMounts", []):
                assert m["name"] not in {"data", "policy"}, f"{overlay}/{c['name']} mounts {m['name']}"


@pytest.mark.parametrize("overlay", CLIENT_OVERLAYS)
def test_launcher_container_is_hardened(overlay, render):
    """Non-root, no privilege escalation, no capability, read-only root; its scratch (/tmp, where its
    private FLWR_HOME of installed bundles lives) is an emptyDir no other container mounts."""
    docs = render(overlay)
    spec, _, _ = supernode(docs)
    _, lc, args = launcher(docs)
    pod_sc = spec.get("securityContext", {})
    sc = lc.get("securityContext", {})
    assert sc, f"{overlay}: the launcher needs its own securityContext"
    assert sc.get("runAsNonRoot") is True
    assert sc.get("runAsUser", pod_sc.get("runAsUser")) not in (None, 0)
    assert sc.get("runAsGroup", pod_sc.get("runAsGroup")) not in (None, 0)
    assert sc.get("allowPrivilegeEscalation") is False
    assert sc.get("privileged", False) is False
    assert sc.get("readOnlyRootFilesystem") is True
    assert sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc["capabilities"].get("add")
    assert sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type") == "RuntimeDefault"
    env = {e["name"]: e.get("value") for e in lc.get("env", [])}
    options = launcher_options(args)
    scratch = [env.get("TMPDIR", "/tmp"), env.get("HOME", "/tmp")]
    if options.flwr_home is not None:
        scratch.append(str(options.flwr_home))
    for path in scratch:
        mount, volume = mount_for(lc, spec, path)
        assert "emptyDir" in volume and not mount.get("readOnly"), f"{overlay}: {path} must be a writable emptyDir"
        assert mounted_by(spec, mount["name"]) == {lc["name"]}, (
            f"{overlay}: {path} ({mount['name']}) is shared with {mounted_by(spec, mount['name']) - {lc['name']}}"
        )
    # `python -m` puts the working directory on sys.path: it must not be writable (else a file there
    # could shadow the hospital's fedheart or launcher), and PYTHONSAFEPATH keeps it off altogether.
    assert env.get("PYTHONSAFEPATH") == "1"
    workdir = lc.get("workingDir", "/")
    for m in lc.get("volumeMounts", []):
        prefix = m["mountPath"].rstrip("/") + "/"
        assert not (workdir.rstrip("/") + "/").startswith(prefix) or m.get("readOnly"), (
            f"{overlay}: the launcher's workingDir {workdir} is on the writable volume {m['name']}"
        )
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(lc.get("resources", {}).get(kind, {})), kind


@pytest.mark.parametrize("overlay", CLIENT_OVERLAYS)
def test_node_config_names_the_hospital_and_its_data_volume(overlay, render):
    docs = render(overlay)
    _, _, args = supernode(docs)
    spec, lc, _ = launcher(docs)  # the ClientApp reads the node-config's paths in the launcher's container
    pairs = node_config(args)
    assert set(pairs) == {"data-path", "hospital", "policy-path", "state-dir"}
    assert pairs["hospital"] == overlay.removeprefix("client-")
    mount, volume = mount_for(lc, spec, pairs["data-path"])
    assert pairs["data-path"].endswith(".csv")
    assert mount.get("readOnly") is True and volume["persistentVolumeClaim"]["claimName"] == "fedheart-data"


@pytest.mark.parametrize("overlay", CLIENT_OVERLAYS)
def test_hospital_policy_is_its_own_configmap_mounted_read_only(overlay, render):
    """node-config policy-path is a file of a ConfigMap generated from the overlay's own policy.yaml,
    mounted read-only, and the app's parser accepts it (a policy it rejects fails every message)."""
    from fedheart.safeguard.policy import parse_policy

    docs = render(overlay)
    _, _, args = supernode(docs)
    spec, lc, _ = launcher(docs)
    path = node_config(args)["policy-path"]
    assert path.startswith("/") and path.endswith((".yaml", ".yml")), path
    mount, _ = mount_for(lc, spec, path)
    assert mount.get("readOnly") is True, f"{overlay}: the policy must be mounted read-only, got {mount}"
    name, key = configmap_file(lc, spec, path)
    configmaps = by_kind(docs, "ConfigMap")
    assert name in configmaps, f"{overlay}: ConfigMap {name} is not rendered"
    # Generated with a content hash: editing policy.yaml renames it and so rolls the SuperNode.
    assert re.fullmatch(r"fedheart-policy-[a-z0-9]{10}", name), name
    text = configmaps[name]["data"][key]
    shipped = OVERLAYS / overlay / "policy.yaml"
    assert text == shipped.read_text(), f"{overlay}: the mounted policy is not {shipped.relative_to(K8S_DIR)}"
    policy = parse_policy(text, str(shipped))
    # The shipped policy is the strict one: DP-SGD required, nothing released outside the budget.
    assert policy.dp_required and policy.max_epsilon_per_run <= policy.lifetime_epsilon
    assert not policy.baselines and not policy.tracking and policy.evaluation != "full"
    # approved-apps is there, as a list the launcher accepts (empty: nothing approved yet), and the file
    # tells the hospital where the hash comes from.
    assert re.search(r"(?m)^approved-apps:", text), f"{shipped}: no top-level approved-apps list"
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in policy.approved_apps)
    assert "python -m launcher.fab ." in text and "approves NOTHING" in text
    # Only the SuperNode's pod sees the policy (the data loader has no use for it).
    for workload, other in pod_specs(docs):
        if workload != "supernode":
            assert not any("configMap" in v for v in other.get("volumes", [])), workload


@pytest.mark.parametrize("overlay", CLIENT_OVERLAYS)
def test_state_dir_is_writable_on_the_hospital_pvc(overlay, render):
    """node-config state-dir (lifetime ledger, audit trail) must outlive the pod: a writable mount of
    the hospital's PVC, while its data stays read-only."""
    docs = render(overlay)
    _, _, args = supernode(docs)
    spec, sn, _ = launcher(docs)  # where the ClientApp and the launcher write it
    pairs = node_config(args)
    state = pairs["state-dir"]
    assert state.startswith("/") and state != "/", state
    mount, volume = mount_for(sn, spec, state)
    claim = volume.get("persistentVolumeClaim")
    assert claim and claim["claimName"] in by_kind(docs, "PersistentVolumeClaim"), f"{overlay}: {state} not on a PVC"
    assert claim["claimName"] == mount_for(sn, spec, pairs["data-path"])[1]["persistentVolumeClaim"]["claimName"]
    assert not mount.get("readOnly") and not claim.get("readOnly"), f"{overlay}: {state} is read-only"
    # Its own folder of the volume (not the data's root, which stays read-only), apart from the policy.
    assert mount.get("subPath"), f"{overlay}: the state folder should be a subPath of the data volume"
    assert mount_for(sn, spec, pairs["data-path"])[0].get("readOnly") is True
    assert not (state + "/").startswith(pairs["policy-path"].rsplit("/", 1)[0] + "/")
    env = {e["name"]: e.get("value") for e in sn.get("env", [])}
    for scratch in ("/tmp", *(env[k] for k in ("HOME", "TMPDIR", "FLWR_HOME") if env.get(k))):
        assert not (state + "/").startswith(scratch.rstrip("/") + "/"), f"{state} is under scratch {scratch}"
