"""Kustomize overlays, every one: render offline, validate against the Kubernetes API schemas
(kubernetes-validate --strict), no placeholder left, pinned images, references defined or documented,
security contexts, writable paths, NetworkPolicy coverage."""

from __future__ import annotations

import re
import subprocess

import pytest

from .conftest import DOCS, K8S_DIR, run, tf_variable_default, venv_tool
from .k8s_helpers import (
    ALL_OVERLAYS,
    APP_UID,
    FLOWER_VERSION,
    HOSPITALS,
    OVERLAYS,
    PLACEHOLDERS,
    by_kind,
    containers,
    documented_secret,
    mount_for,
    pod_specs,
    string_values,
)


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


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_no_placeholders_left(overlay, render):
    """params.yaml replaced every placeholder of the base ($(VAR) references are the kubelet's; the
    fleet proxy's template and its envsubst filter hold envsubst's own ${VAR} names)."""
    docs = [
        d
        for d in render(overlay)
        if not (d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("fleet-proxy-template-"))
    ]
    for value in string_values(docs):
        if value.startswith("^(PROXY_LISTEN|"):  # NGINX_ENVSUBST_FILTER
            continue
        for token in PLACEHOLDERS:
            assert not re.search(rf"(?<![A-Za-z_(]){token}(?![A-Za-z_)])", value), (
                f"{overlay}: {token} left in {value!r}"
            )


@pytest.mark.parametrize("overlay", ALL_OVERLAYS)
def test_params_stay_out_of_the_cluster(overlay, render):
    """params.yaml is local-config: it parameterises the render but is not applied."""
    assert "fedheart-params" not in by_kind(render(overlay), "ConfigMap")


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
            elif repo == "fedheart/fleet-proxy":  # nginxinc/nginx-unprivileged, mirrored: its nginx version
                assert re.fullmatch(r"\d+\.\d+\.\d+(-alpine)?", tag), image
            else:  # app images: Flower version plus an app revision
                assert re.fullmatch(rf"{re.escape(FLOWER_VERSION)}-[A-Za-z0-9][A-Za-z0-9._-]*", tag), image
            assert c.get("imagePullPolicy", "IfNotPresent") == "IfNotPresent"
    assert len(registries) == 1 and re.fullmatch(r"\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com", registries.pop())


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
            if c["name"] not in ("data-loader", "fleet-proxy"):  # no Flower in them
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
