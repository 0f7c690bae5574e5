"""Helpers of the Kustomize checks (test_k8s_*.py): the overlays, and readers of rendered objects
(workloads, containers, flags, mounts, Secret and ConfigMap files, the CLIs' own option lists)."""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import shlex
import subprocess
import sys
import types

from .conftest import K8S_DIR, REPO, venv_tool

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
    "VPC_CIDR",
    "SERVICE_CIDR",
    "SUPERLINK_EGRESS",
    "SOURCE_RANGES",
    "SUPERLINK_EIP_ALLOCATIONS",
)


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
