"""Kustomize overlays: render offline, validate against the Kubernetes API
schemas (kubernetes-validate --strict), and check the invariants the
deployment relies on (ports, addresses, references, security contexts)."""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import os
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest

from .conftest import DOCS, K8S_DIR, REPO, run, tf_variable_default, venv_tool

OVERLAYS = K8S_DIR / "overlays"
SERVER_OVERLAYS = ("server", "server-peering")
HOSPITALS = ("cleveland", "hungarian", "switzerland", "va")
CLIENT_OVERLAYS = tuple(f"client-{h}" for h in HOSPITALS)
ALL_OVERLAYS = SERVER_OVERLAYS + CLIENT_OVERLAYS
FLOWER_VERSION = "1.42.0"
APP_UID = 49999
PLACEHOLDERS = (
    "ECR_REGISTRY",
    "APP_IMAGE_TAG",
    "SAGEMAKER_ROLE_ARN",
    "SUPERLINK_ADDRESS",
    "AWS_REGION",
    "HOSPITAL",
    "DATA_PATH",
)


# --------------------------------------------------------------------------- helpers


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs):
    """(workload name, pod spec) of every workload in a render."""
    for doc in docs:
        if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]
        elif doc["kind"] == "Pod":
            yield doc["metadata"]["name"], doc["spec"]


def containers(spec):
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def flag(args, name):
    """Value of `--name value` or `--name=value` in a container's args."""
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def expand(value, container):
    """Expand $(VAR) references the way the kubelet does, from literal env values."""
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}

    def sub(match):
        assert match.group(1) in env, f"$({match.group(1)}) is not a literal env var of {container['name']}"
        return env[match.group(1)]

    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, value)


def mount_for(container, spec, path):
    """The (volumeMount, volume) a file path lives under in a container."""
    best = None
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if (path + "/").startswith(prefix) and (best is None or len(prefix) > len(best["mountPath"])):
            best = mount
    assert best is not None, f"{path} is not on a volume of container {container['name']}"
    (volume,) = [v for v in spec["volumes"] if v["name"] == best["name"]]
    return best, volume


def _volume_key(container, spec, path, source):
    """(volume source, key) that a file path of a container comes from, for a Secret or ConfigMap volume."""
    mount, volume = mount_for(container, spec, path)
    assert source in volume, f"{path} must come from a {source} volume, got {volume}"
    rel = path[len(mount["mountPath"].rstrip("/")) + 1 :]
    if mount.get("subPath"):
        rel = f"{mount['subPath']}/{rel}" if rel else mount["subPath"]
    items = {i["path"]: i["key"] for i in volume[source].get("items", [])}
    return volume[source], items.get(rel, rel)


def secret_file(container, spec, path):
    """(secret name, key) that a file path of a container comes from."""
    secret, key = _volume_key(container, spec, path, "secret")
    return secret["secretName"], key


def configmap_file(container, spec, path):
    """(ConfigMap name, key) that a file path of a container comes from."""
    configmap, key = _volume_key(container, spec, path, "configMap")
    return configmap["name"], key


def supernode(docs):
    """(pod spec, SuperNode container, its args with $(VAR) expanded) of a client render."""
    spec = by_kind(docs, "Deployment")["supernode"]["spec"]["template"]["spec"]
    (sn,) = [c for c in spec["containers"] if c["name"] == "supernode"]
    return spec, sn, [expand(a, sn) for a in sn["args"]]


def runs_launcher(container):
    """Whether a container runs the hospital's launcher (``python -m launcher.hospital``)."""
    words = list(container.get("command", [])) + list(container.get("args", []))
    return any(w.startswith("launcher.hospital") or "launcher/hospital" in w for w in words)


def launcher(docs):
    """(pod spec, launcher container, its args with $(VAR) expanded) of a client render: the container
    beside the SuperNode, in the same pod, that runs ``python -m launcher.hospital``."""
    spec, _, _ = supernode(docs)
    found = [c for c in containers(spec) if runs_launcher(c)]
    assert len(found) == 1, f"expected one launcher.hospital container in the supernode pod, got {len(found)}"
    (lc,) = found
    return spec, lc, [expand(a, lc) for a in lc.get("args", [])]


@functools.cache
def cli_spec(*command):
    """{option: (takes a value, choices or None)} and the required options, read from `COMMAND --help`
    (the real entry point, as the container runs it; no private parser is imported)."""
    result = subprocess.run(
        [*command, "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "1000"},
        timeout=120,
    )
    assert result.returncode == 0, f"{' '.join(command)} --help failed:\n{result.stdout}{result.stderr}"
    usage, _, rest = result.stdout.partition("\n\n")
    options = {}
    for match in re.finditer(r"(?m)^  (-[^ ,]+(?:, -[^ ,]+)*)(?: (\S+))?(?: {2,}|$)", rest):
        metavar = match.group(2)
        choices = tuple(metavar[1:-1].split(",")) if metavar and metavar.startswith("{") else None
        for name in match.group(1).split(", "):
            options[name] = (metavar is not None, choices)
    required = set(re.findall(r"(?<![\w-])--[\w-]+", re.sub(r"\[[^\]]*\]", "", usage))) & set(options)
    assert options, f"no options in {' '.join(command)} --help"
    return options, required


def parse_cli(command, args):
    """Container args parsed against the options `COMMAND --help` lists: a flag it lacks, a missing
    value or a missing required option fails here. Returns the values by dest name (flags: True)."""
    options, required = cli_spec(*command)
    values, i = {}, 0
    while i < len(args):
        name, eq, inline = args[i].partition("=")
        assert name in options, f"{' '.join(command)} has no option {name} (container args {args})"
        takes_value, choices = options[name]
        if takes_value:
            if eq:
                value = inline
            else:
                assert i + 1 < len(args), f"{name} needs a value"
                i += 1
                value = args[i]
            assert choices is None or value in choices, f"{name} {value}: not one of {choices}"
        else:
            assert not eq, f"{name} takes no value"
            value = True
        values[name.lstrip("-").replace("-", "_")] = value
        i += 1
    missing = {r for r in required if r.lstrip("-").replace("-", "_") not in values}
    assert not missing, f"{' '.join(command)}: required options {sorted(missing)} missing from {args}"
    defaults = {n.lstrip("-").replace("-", "_"): (None if options[n][0] else False) for n in options}
    return types.SimpleNamespace(**{**defaults, **values})


def launcher_options(args):
    """The launcher's container args, checked against `python -m launcher.hospital --help`."""
    return parse_cli((sys.executable, "-m", "launcher.hospital"), args)


def supernode_options(args):
    """The SuperNode's container args, checked against `flower-supernode --help`."""
    return parse_cli((venv_tool("flower-supernode"),), args)


def mounted_by(spec, volume_name):
    """Names of the containers of a pod that mount a volume."""
    return {c["name"] for c in containers(spec) for m in c.get("volumeMounts", []) if m["name"] == volume_name}


def node_config(args):
    """The SuperNode's --node-config as a dict (values unquoted the way Flower's parser does)."""
    return dict(item.split("=", 1) for item in shlex.split(flag(args, "--node-config")))


def external_secrets():
    """[(overlay glob, secret name, {keys})] from k8s/external-secrets.txt."""
    entries = []
    for line in (K8S_DIR / "external-secrets.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            glob, name, *keys = line.split()
            entries.append((glob, name, set(keys)))
    return entries


def documented_secret(overlay, name):
    matches = [keys for glob, secret, keys in external_secrets() if secret == name and fnmatch.fnmatch(overlay, glob)]
    return matches[0] if matches else None


def server_service(docs):
    return by_kind(docs, "Service")["superlink"]


@pytest.fixture(scope="module")
def render(kustomize_render):
    return lambda overlay: kustomize_render(OVERLAYS / overlay)


# --------------------------------------------------------------------------- rendering + schemas


def test_overlay_set_is_complete_and_documented():
    assert sorted(p.name for p in OVERLAYS.iterdir() if p.is_dir()) == sorted(ALL_OVERLAYS)
    docs = DOCS.read_text()
    for overlay in ALL_OVERLAYS:
        assert f"k8s/overlays/{overlay}" in docs, f"docs/deploy-eks.md does not mention k8s/overlays/{overlay}"


@pytest.mark.parametrize("path", [f"overlays/{o}" for o in ALL_OVERLAYS] + ["cluster"])
def test_renders_and_validates_strictly(path, kustomize_render, tmp_path):
    """kubectl kustomize | kubernetes-validate --strict, for the EKS version terraform deploys."""
    docs = kustomize_render(K8S_DIR / path)
    assert docs, f"{path} renders nothing"
    cli = venv_tool("kubernetes-validate")
    assert cli, "kubernetes-validate is not installed (pip install kubernetes-validate)"
    version = tf_variable_default("kubernetes_version")
    kubectl = run(["kubectl", "kustomize", str(K8S_DIR / path)])
    result = subprocess.run(
        [cli, "--strict", "--kubernetes-version", f"{version}.0", "--quiet", "-"],
        input=kubectl.stdout,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, f"{path} fails schema validation (k8s {version}):\n{result.stdout}{result.stderr}"


def string_values(node, key=None):
    """Every string value in a document, except names (env var names are legitimately upper case)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from string_values(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from string_values(v, key)
    elif isinstance(node, str) and key != "name":
        yield node


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_no_placeholders_left(overlay, render):
    """params.yaml replaced every placeholder of the base ($(VAR) references are the kubelet's)."""
    for value in string_values(render(overlay)):
        for token in PLACEHOLDERS:
            assert not re.search(rf"(?<![A-Za-z_(]){token}(?![A-Za-z_)])", value), (
                f"{overlay}: {token} left in {value!r}"
            )


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_params_stay_out_of_the_cluster(overlay, render):
    """params.yaml is local-config: it parameterises the render but is not applied."""
    assert "fedheart-params" not in by_kind(render(overlay), "ConfigMap")


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_images_are_pinned(overlay, render):
    registries = set()
    for _, spec in pod_specs(render(overlay)):
        for c in containers(spec):
            image = c["image"]
            registry, _, rest = image.partition("/")
            registries.add(registry)
            repo, _, tag = rest.rpartition(":")
            assert tag and "@" not in tag and tag != "latest", f"{overlay}: unpinned image {image}"
            if repo == "fedheart/superlink":
                assert tag == FLOWER_VERSION, image
            else:  # app images: Flower version plus an app revision
                assert re.fullmatch(rf"{re.escape(FLOWER_VERSION)}-[A-Za-z0-9][A-Za-z0-9._-]*", tag), image
            assert c.get("imagePullPolicy", "IfNotPresent") == "IfNotPresent"
    assert len(registries) == 1 and re.fullmatch(r"\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com", registries.pop())


# --------------------------------------------------------------------------- server


@pytest.mark.parametrize("overlay", SERVER_OVERLAYS)
def test_superlink_serves_one_tls_port_behind_the_service(overlay, render):
    docs = render(overlay)
    spec = by_kind(docs, "Deployment")["superlink"]["spec"]["template"]["spec"]
    sl = {c["name"]: c for c in spec["containers"]}["superlink"]
    args = sl["args"]
    port = int(flag(args, "--port"))
    assert flag(args, "--host") == "0.0.0.0"
    assert [p["containerPort"] for p in sl["ports"]] == [port]
    port_name = sl["ports"][0]["name"]

    service = server_service(docs)
    (svc_port,) = service["spec"]["ports"]
    assert svc_port["port"] == port and svc_port["targetPort"] in (port, port_name)
    assert (
        service["spec"]["selector"].items()
        <= by_kind(docs, "Deployment")["superlink"]["spec"]["template"]["metadata"]["labels"].items()
    )

    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = sl[probe]["httpGet"]
        assert get["path"] == "/health" and get["scheme"] == "HTTPS" and get["port"] in (port, port_name), probe

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


def test_service_is_an_internet_facing_nlb(render):
    service = server_service(render("server"))
    annotations = service["metadata"]["annotations"]
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["loadBalancerClass"] == "eks.amazonaws.com/nlb"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internet-facing"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"] == "ip"


def test_peering_overlay_uses_an_internal_nlb_open_to_the_client_vpcs(render):
    service = server_service(render("server-peering"))
    assert service["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"
    assert service["spec"]["loadBalancerClass"] == "eks.amazonaws.com/nlb"
    # terraform carves VPCs from vpc_cidr_base: server = block 0, hospitals 1..4.
    base = ipaddress.ip_network(tf_variable_default("vpc_cidr_base"))
    blocks = list(base.subnets(prefixlen_diff=int(tf_variable_default("vpc_newbits"))))
    assert service["spec"]["loadBalancerSourceRanges"] == [str(b) for b in blocks[1 : 1 + len(HOSPITALS)]]
    # Everything else is the internet-facing overlay.
    other = render("server")
    assert [d for d in render("server-peering") if d["kind"] != "Service"] == [
        d for d in other if d["kind"] != "Service"
    ]


# --------------------------------------------------------------------------- clients


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


# ------------------------------------------------ clients: the hospital's launcher beside the SuperNode


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


@pytest.mark.parametrize("overlay", SERVER_OVERLAYS)
def test_server_overlays_run_no_hospital_launcher(overlay, render):
    """The launcher is the hospital's: the aggregator runs Flower's SuperExec for its ServerApp only."""
    for name, spec in pod_specs(render(overlay)):
        for c in containers(spec):
            assert c["name"] != "launcher" and not runs_launcher(c), f"{overlay}/{name}/{c['name']}"
            assert "approved-apps" not in " ".join(c.get("args", []))


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


@pytest.mark.parametrize("overlay", CLIENT_OVERLAYS)
def test_supernode_network_policy_allows_only_superlink_dns_and_aws(overlay, render):
    docs = render(overlay)
    server_port = server_service(render("server"))["spec"]["ports"][0]["port"]
    policy = by_kind(docs, "NetworkPolicy")["supernode"]
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"} and not policy["spec"].get("ingress")
    allowed = {(p["port"], p.get("protocol", "TCP")) for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert allowed == {(server_port, "TCP"), (53, "UDP"), (53, "TCP"), (443, "TCP")}
    for rule in policy["spec"]["egress"]:
        for peer in rule.get("to", []):
            assert "169.254.169.254/32" in peer["ipBlock"].get("except", []), "instance metadata must stay blocked"


def test_superlink_network_policy(render):
    docs = render("server")
    policy = by_kind(docs, "NetworkPolicy")["superlink"]
    port = server_service(docs)["spec"]["ports"][0]["port"]
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ingress_ports = {(p["port"], p.get("protocol", "TCP")) for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == {(port, "TCP")}
    egress_ports = {(p["port"], p.get("protocol", "TCP")) for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (443, "TCP")}


# --------------------------------------------------------------------------- every overlay


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_every_pod_is_covered_by_a_network_policy(overlay, render):
    docs = render(overlay)
    policies = by_kind(docs, "NetworkPolicy").values()
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        labels = doc["spec"]["template"]["metadata"]["labels"]
        selecting = [p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
        assert any({"Ingress", "Egress"} <= set(p["spec"]["policyTypes"]) for p in selecting), doc["metadata"]["name"]


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_references_are_defined_or_documented_external_secrets(overlay, render, kustomize_render):
    docs = render(overlay)
    defined = {
        kind: set(by_kind(docs, kind)) for kind in ("Secret", "ConfigMap", "PersistentVolumeClaim", "ServiceAccount")
    }
    storage_classes = set(by_kind(kustomize_render(K8S_DIR / "cluster"), "StorageClass"))
    for name, spec in pod_specs(docs):
        secrets, configmaps, claims = {}, set(), set()
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                keys = {i["key"] for i in volume["secret"].get("items", [])}
                secrets.setdefault(volume["secret"]["secretName"], set()).update(keys)
            if "configMap" in volume:
                configmaps.add(volume["configMap"]["name"])
            if "persistentVolumeClaim" in volume:
                claims.add(volume["persistentVolumeClaim"]["claimName"])
            for source in volume.get("projected", {}).get("sources", []):
                if "secret" in source:
                    secrets.setdefault(source["secret"]["name"], set())
                if "configMap" in source:
                    configmaps.add(source["configMap"]["name"])
        for c in containers(spec):
            for env in c.get("env", []):
                ref = env.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    secrets.setdefault(ref["secretKeyRef"]["name"], set()).add(ref["secretKeyRef"]["key"])
                if "configMapKeyRef" in ref:
                    configmaps.add(ref["configMapKeyRef"]["name"])
            for env_from in c.get("envFrom", []):
                if "secretRef" in env_from:
                    secrets.setdefault(env_from["secretRef"]["name"], set())
                if "configMapRef" in env_from:
                    configmaps.add(env_from["configMapRef"]["name"])
        for pull in spec.get("imagePullSecrets", []):
            secrets.setdefault(pull["name"], set())

        for secret, keys in secrets.items():
            if secret in defined["Secret"]:
                continue
            documented = documented_secret(overlay, secret)
            assert documented is not None, (
                f"{overlay}/{name}: Secret {secret} neither rendered nor in k8s/external-secrets.txt"
            )
            assert keys <= documented, f"{overlay}/{name}: keys {keys - documented} of {secret} undocumented"
        assert configmaps <= defined["ConfigMap"], (
            f"{overlay}/{name}: missing ConfigMaps {configmaps - defined['ConfigMap']}"
        )
        assert claims <= defined["PersistentVolumeClaim"], f"{overlay}/{name}: missing PVCs"
        account = spec.get("serviceAccountName", "default")
        assert account == "default" or account in defined["ServiceAccount"], f"{overlay}/{name}: missing {account}"
    for pvc in by_kind(docs, "PersistentVolumeClaim").values():
        assert pvc["spec"]["storageClassName"] in storage_classes, "StorageClass must come from k8s/cluster"


def test_external_secrets_are_created_in_the_docs():
    docs = DOCS.read_text()
    for _, name, keys in external_secrets():
        commands = re.findall(rf"kubectl [^\n]*create secret generic {re.escape(name)}\b(?:[^\n]*\\\n)*[^\n]*", docs)
        assert commands, f"docs/deploy-eks.md has no `kubectl create secret generic {name}`"
        for key in keys:
            assert any(re.search(rf"--from-(?:file|literal)={re.escape(key)}=", c) for c in commands), (
                f"{name}: key {key}"
            )


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_service_accounts_carry_the_sagemaker_role(overlay, render):
    docs = render(overlay)
    cluster = "server" if overlay.startswith("server") else overlay.removeprefix("client-")
    prefix = tf_variable_default("name_prefix")
    expected_sa = tf_variable_default("server_service_account" if cluster == "server" else "client_service_account")
    accounts = by_kind(docs, "ServiceAccount")
    assert set(accounts) == {expected_sa}, "IRSA trust (terraform) names this ServiceAccount"
    arn = accounts[expected_sa]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(rf"arn:aws:iam::\d{{12}}:role/{prefix}-{cluster}-sagemaker", arn), arn
    for doc in docs:
        assert doc.get("metadata", {}).get("namespace", tf_variable_default("k8s_namespace")) == tf_variable_default(
            "k8s_namespace"
        )
    namespace = by_kind(docs, "Namespace")[tf_variable_default("k8s_namespace")]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_pod_and_container_security(overlay, render):
    for name, spec in pod_specs(render(overlay)):
        pod_sc = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False, f"{name}: no Kubernetes API token needed"
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), name
        assert pod_sc.get("runAsUser") == APP_UID and pod_sc.get("fsGroup") == APP_UID, name
        for c in containers(spec):
            sc = c.get("securityContext", {})
            where = f"{overlay}/{name}/{c['name']}"
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", pod_sc.get("runAsUser")) not in (None, 0), where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("privileged", False) is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc["capabilities"].get("add"), where
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(kind, {})), f"{where}: resources.{kind}"


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_writable_paths_are_volumes(overlay, render):
    """With a read-only root filesystem, /tmp, $HOME and $FLWR_HOME must be volumes."""
    for name, spec in pod_specs(render(overlay)):
        for c in containers(spec):
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            paths = ["/tmp"] + [env[k] for k in ("HOME", "FLWR_HOME") if k in env]
            for path in paths:
                mount, volume = mount_for(c, spec, path)
                assert not mount.get("readOnly") and ("emptyDir" in volume or "persistentVolumeClaim" in volume), (
                    f"{overlay}/{name}/{c['name']}: {path} not writable"
                )
            if c["name"] != "data-loader":
                assert env.get("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION") == "1", f"{name}/{c['name']}"


def test_hospital_overlays_match_the_app_and_terraform():
    """Overlay names = the app's hospital keys (launcher.certs key files) ⊇ terraform's default clusters."""
    from fedheart.schema import HOSPITALS as APP_HOSPITALS

    assert sorted(h.key for h in APP_HOSPITALS) == sorted(HOSPITALS)
    default_clusters = re.search(
        r'variable "client_clusters" \{.*?default\s*=\s*\[([^\]]*)\]',
        (K8S_DIR.parent / "terraform" / "variables.tf").read_text(),
        re.S,
    )
    names = re.findall(r'"([^"]+)"', default_clusters.group(1))
    assert names and set(names) <= set(HOSPITALS)
    example = (K8S_DIR.parent / "terraform" / "four-hospitals.tfvars.example").read_text()
    assert sorted(re.findall(r'"([^"]+)"', re.search(r"client_clusters = \[(.*)\]", example).group(1))) == sorted(
        HOSPITALS
    )
