"""Container images: pinned Flower base images, non-root users, and a
requirement file that resolves (pip dry run, CPU torch only)."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import time
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from .conftest import DOCKER_DIR, K8S_DIR, REPO

FLOWER_VERSION = "1.42.0"
DOCKERFILES = {
    "superlink": DOCKER_DIR / "superlink.Dockerfile",
    "supernode": DOCKER_DIR / "supernode.Dockerfile",
    "superexec": DOCKER_DIR / "superexec.Dockerfile",
}
APP_IMAGES = ("supernode", "superexec")  # carry the app's dependencies
REQUIREMENTS = DOCKER_DIR / "requirements-app.txt"


def instructions(path):
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


def dockerignore(image):
    """Patterns of an image's <name>.Dockerfile.dockerignore (comments and blank lines dropped)."""
    lines = (DOCKER_DIR / f"{image}.Dockerfile.dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def in_build_context(image, path):
    """Whether a repository path reaches an image's build context (Docker's rules: the last matching
    pattern wins, `!` re-includes, a pattern also matches everything under a matching folder)."""
    included = True
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in dockerignore(image):
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            included = negated
    return included


def launcher_containers(render):
    """(overlay, container) of every container in the rendered overlays that runs the hospital's launcher."""
    found = []
    for overlay in sorted((K8S_DIR / "overlays").iterdir()):
        for doc in render(overlay):
            if doc and doc.get("kind") == "Deployment":
                for c in doc["spec"]["template"]["spec"]["containers"]:
                    words = list(c.get("command", [])) + list(c.get("args", []))
                    if any(w.startswith("launcher.hospital") for w in words):
                        found.append((overlay.name, c))
    return found


def requirements():
    reqs = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            reqs[canonicalize_name(req.name)] = req
    return reqs


def pinned_version(req):
    (spec,) = list(req.specifier)
    assert spec.operator == "==", f"{req} is not pinned with =="
    return spec.version


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_base_image_is_the_pinned_flower_release(image):
    froms = [args for keyword, args in instructions(DOCKERFILES[image]) if keyword == "FROM"]
    assert len(froms) == 1, f"{image}: expected one FROM, got {froms}"
    name, _, tag = froms[0].split()[0].partition(":")
    assert name == f"flwr/{image}"
    assert tag == FLOWER_VERSION or tag.startswith(f"{FLOWER_VERSION}-"), (
        f"{image}: tag {tag!r} not pinned to {FLOWER_VERSION}"
    )


def test_flower_pin_matches_the_base_images():
    assert pinned_version(requirements()["flwr"]) == FLOWER_VERSION


@pytest.mark.parametrize("image", APP_IMAGES)
def test_app_images_use_a_python_the_app_supports(image):
    """The plain 1.42.0 tags are Alpine or Python 3.13; the app needs glibc wheels and its requires-python."""
    (from_args,) = [args for keyword, args in instructions(DOCKERFILES[image]) if keyword == "FROM"]
    tag = from_args.split(":", 1)[1]
    match = re.fullmatch(rf"{re.escape(FLOWER_VERSION)}-py(\d+\.\d+)-ubuntu[\d.]+", tag)
    assert match, f"{image}: use a -pyX.Y-ubuntu variant of {FLOWER_VERSION}, not {tag!r}"
    requires_python = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert Version(match.group(1) + ".0") in SpecifierSet(requires_python), (
        f"{image}: Python {match.group(1)} outside requires-python {requires_python}"
    )


def pod_run_as_user(render):
    """runAsUser of every pod template in the rendered k8s overlays."""
    users = set()
    for overlay in sorted((K8S_DIR / "overlays").iterdir()):
        for doc in render(overlay):
            if doc and doc.get("kind") == "Deployment":
                users.add(doc["spec"]["template"]["spec"]["securityContext"]["runAsUser"])
    return users


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_runs_as_the_numeric_non_root_user_the_pods_expect(image, kustomize_render):
    users = [args for keyword, args in instructions(DOCKERFILES[image]) if keyword == "USER"]
    assert users, f"{image}: no USER instruction"
    last = users[-1]
    uid = last.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{image}: final USER {last!r} must be a numeric non-root uid"
    # runAsNonRoot can only verify numeric users; the pods run with the same uid.
    assert pod_run_as_user(kustomize_render) == {int(uid)}


@pytest.mark.parametrize("image", APP_IMAGES)
def test_app_images_install_cpu_torch_and_the_app_without_deps(image):
    text = re.sub(r"\\\n", " ", DOCKERFILES[image].read_text())
    assert re.search(r"--index-url https://download\.pytorch\.org/whl/cpu torch==2\.13\.0", text), (
        f"{image}: torch must come from the CPU index"
    )
    assert "-r /tmp/requirements-app.txt" in text and "docker/requirements-app.txt" in text
    assert re.search(r"pip install --no-cache-dir --no-deps /tmp/src", text)
    ignore = (DOCKER_DIR / f"{image}.Dockerfile.dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", f"{image}: the build context must be an allow-list (.venv is several GB)"
    assert not any(p.startswith("!") and (".venv" in p or "data" in p or "key" in p) for p in patterns)


def test_launcher_runs_from_an_app_image_that_installs_it(kustomize_render):
    """The hospital's launcher sidecar needs the app's runtime stack (torch, opacus, ...) and the
    hospital's own fedheart and launcher packages: its image is an app image whose build context holds
    launcher/ and fedheart/ (installed with the rest of the sources), and the container replaces the
    image's flower-supernode entrypoint."""
    found = launcher_containers(kustomize_render)
    assert {overlay for overlay, _ in found} == {p.name for p in (K8S_DIR / "overlays").glob("client-*")}, (
        "every hospital overlay, and only those, runs the launcher"
    )
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert any(fnmatch.fnmatchcase("launcher", pattern) for pattern in packages["include"]), (
        "pyproject.toml does not install the launcher package"
    )
    for overlay, container in found:
        image = container["image"].split("/", 1)[1].split(":")[0].removeprefix("fedheart/")
        assert image in APP_IMAGES, f"{overlay}: the launcher runs from {image}, which lacks the app's stack"
        sources = [
            f for top in ("launcher", "fedheart", "fedheart_cli") for f in (REPO / top).rglob("*.py")
            if "__pycache__" not in f.parts
        ]
        assert sources
        for source in sources:
            rel = source.relative_to(REPO).as_posix()
            assert in_build_context(image, rel), f"{image} image: {rel} is not in its build context (.dockerignore)"
        text = re.sub(r"\\\n", " ", DOCKERFILES[image].read_text())
        assert "COPY --chown=49999:49999 . /tmp/src" in text and "pip install --no-cache-dir --no-deps /tmp/src" in text
        entrypoints = [args for keyword, args in instructions(DOCKERFILES[image]) if keyword == "ENTRYPOINT"]
        assert entrypoints and "launcher" not in entrypoints[-1]
        assert container.get("command") == ["python", "-m", "launcher.hospital"], (
            f"{overlay}: the container must override the image's entrypoint {entrypoints[-1]}"
        )


def test_requirements_are_pinned_and_cover_the_app():
    reqs = requirements()
    for req in reqs.values():
        pinned_version(req)
    assert pinned_version(reqs["torch"]) == "2.13.0"
    assert pinned_version(reqs["opacus"]) == "1.6.0"
    # Everything the app declares (its runtime deps and the "aws" extra) is
    # pinned to a version its own specifier accepts; only the simulation
    # extra (Ray) is left out of the images.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [Requirement(r) for r in project.get("optional-dependencies", {}).get("aws", [])]
    for dep in declared:
        name = canonicalize_name(dep.name)
        assert name in reqs, f"{dep} (pyproject.toml) missing from docker/requirements-app.txt"
        version = pinned_version(reqs[name])
        assert dep.specifier.contains(version, prereleases=True), f"pin {name}=={version} violates {dep}"
        assert set(dep.extras) - {"simulation"} <= set(reqs[name].extras), f"{name}: extras {dep.extras}"


def test_requirements_resolve_with_cpu_torch(pip_resolution):
    """pip resolves the whole file together (dry run: downloads metadata only), CPU torch only.

    The resolution runs in the background (conftest.pip_resolution) while the other checks run.
    """
    proc = pip_resolution["proc"]
    try:
        returncode = proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("pip did not resolve docker/requirements-app.txt within 5 minutes")
    elapsed = time.monotonic() - pip_resolution["started"]
    log = pip_resolution["log"].read_text()
    assert returncode == 0, f"pip could not resolve docker/requirements-app.txt:\n{log[-4000:]}"
    installed = {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in json.loads(pip_resolution["report"].read_text())["install"]
    }
    for name, req in requirements().items():
        assert Version(installed[name]).public == pinned_version(req), f"{name}: resolved {installed[name]}"
    assert installed["torch"].endswith("+cpu")
    cuda = sorted(n for n in installed if n.startswith(("nvidia-", "triton")))
    assert not cuda, f"CUDA packages in the resolution: {cuda}"
    print(f"pip dry-run resolved {len(installed)} packages in {elapsed:.0f}s (in the background)")


# Images mirrored into ECR rather than built here: ECR repository -> upstream image.
MIRRORED = {"fedheart/fleet-proxy": "nginxinc/nginx-unprivileged"}


def test_k8s_app_images_match_the_dockerfiles(kustomize_render):
    """Images in the manifests are the three built here, or one the runbook mirrors with the same tag,
    from the ECR repos terraform creates."""
    runbook = (REPO / "docs" / "deploy-eks.md").read_text()
    repositories = re.search(r"images = toset\(\[([^\]]*)\]\)", (REPO / "terraform" / "ecr.tf").read_text())
    for overlay in sorted((K8S_DIR / "overlays").iterdir()):
        for doc in kustomize_render(overlay):
            if not doc or doc.get("kind") != "Deployment":
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                repo, _, tag = container["image"].split("/", 1)[1].partition(":")
                assert f'"{repo.removeprefix("fedheart/")}"' in repositories.group(1), f"no ECR repository {repo}"
                if repo in MIRRORED:
                    upstream = f"{MIRRORED[repo]}:{tag}"
                    assert f"docker tag {upstream} $REGISTRY/{repo}:{tag}" in runbook, f"the runbook mirrors {upstream}"
                    continue
                assert repo in {f"fedheart/{name}" for name in DOCKERFILES}, container["image"]


def test_requirements_agree_with_the_project_constraints():
    """The images run the versions the project is developed and tested with (requirements/constraints.txt)."""
    constraints = {}
    for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            constraints[canonicalize_name(req.name)] = pinned_version(req)
    for name, req in requirements().items():
        assert name in constraints, f"{name} is not in requirements/constraints.txt"
        assert Version(constraints[name]).public == pinned_version(req), (
            f"{name}: image pins {pinned_version(req)}, the project {constraints[name]}"
        )


def test_the_test_environment_runs_the_image_pins():
    """The requirement file installs into a venv: this one (make install, with the project's
    constraints) holds every pinned version the images install, so every test here ran on them."""
    from importlib.metadata import PackageNotFoundError, version

    for name, req in requirements().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            pytest.fail(f"{name} (docker/requirements-app.txt) is not installed in the test environment")
        assert Version(installed).public == pinned_version(req), f"{name}: venv has {installed}, images pin {req}"
