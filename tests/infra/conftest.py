"""Shared helpers for the offline infrastructure checks (Terraform, Kustomize, images)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO / "terraform"
K8S_DIR = REPO / "k8s"
DOCKER_DIR = REPO / "docker"
DOCS = REPO / "docs" / "deploy-eks.md"

DEFAULT_PLUGIN_MIRROR = "/opt/tf-plugins"


def require_tool(name: str) -> str:
    """Path of a CLI tool; skip the test (with the reason) when it is not on PATH."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"`{name}` is not on PATH; install it to run this check")
    return path


def venv_tool(name: str) -> str | None:
    """A console script of this interpreter's environment, else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


def write_cli_config(dest_dir: Path) -> Path:
    """Project CLI config (terraform/cli-config.tfrc) with the mirror from $TF_PLUGIN_MIRROR."""
    mirror = os.environ.get("TF_PLUGIN_MIRROR", DEFAULT_PLUGIN_MIRROR)
    text = (TERRAFORM_DIR / "cli-config.tfrc").read_text()
    text, count = re.subn(r'(?m)^(\s*path\s*=\s*)"[^"]*"', rf'\g<1>"{mirror}"', text)
    assert count == 1, "terraform/cli-config.tfrc must hold exactly one filesystem_mirror path"
    path = dest_dir / "cli-config.tfrc"
    path.write_text(text)
    return path


def tf_variable_default(name: str) -> str:
    """The literal default of a string/number variable in terraform/variables.tf."""
    text = (TERRAFORM_DIR / "variables.tf").read_text()
    block = re.search(rf'variable "{name}" \{{(.*?)\n\}}', text, re.S)
    assert block, f"variable {name} not found in terraform/variables.tf"
    default = re.search(r'^\s*default\s*=\s*"?([^"\n]*)"?\s*$', block.group(1), re.M)
    assert default, f"variable {name} has no scalar default"
    return default.group(1)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="session")
def kustomize_render():
    """render(path) -> list of documents from `kubectl kustomize path` (cached)."""
    import yaml

    kubectl = require_tool("kubectl")
    cache: dict[Path, list[dict]] = {}

    def render(path: Path) -> list[dict]:
        path = Path(path)
        if path not in cache:
            result = run([kubectl, "kustomize", str(path)])
            assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
            cache[path] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return cache[path]

    return render


@pytest.fixture(scope="session")
def render(kustomize_render):
    """render(overlay) -> the documents of k8s/overlays/<overlay> (cached)."""
    return lambda overlay: kustomize_render(K8S_DIR / "overlays" / overlay)


# The pip resolution of docker/requirements-app.txt (test_images.py) is mostly
# network wait: start it in the background with the first infra test and check
# it last, so it overlaps with the Terraform and Kustomize checks.
RESOLVE_TEST = "test_requirements_resolve_with_cpu_torch"
REQUIREMENTS = REPO / "docker" / "requirements-app.txt"


def pytest_collection_modifyitems(session, config, items):
    slow = [item for item in items if item.name == RESOLVE_TEST and Path(item.path).parent == Path(__file__).parent]
    for item in slow:
        items.remove(item)
        items.append(item)


@pytest.fixture(scope="session", autouse=True)
def pip_resolution(request, tmp_path_factory):
    """A running `pip install --dry-run --report` of requirements-app.txt (or None if not selected).

    A constraint pins torch to the CPU build, so pip can never pick (or fetch)
    a CUDA torch; on this machine it comes from the local wheel directory.
    """
    if not any(item.name == RESOLVE_TEST for item in request.session.items):
        yield None
        return
    import time

    tmp = tmp_path_factory.mktemp("pip")
    (tmp / "cpu-torch.txt").write_text("torch==2.13.0+cpu\n")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--no-input",
        "--disable-pip-version-check",
        "--report",
        str(tmp / "report.json"),
        "-c",
        str(tmp / "cpu-torch.txt"),
        "-r",
        str(REQUIREMENTS),
    ]
    with open(tmp / "pip.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    resolution = {"proc": proc, "report": tmp / "report.json", "log": tmp / "pip.log", "started": time.monotonic()}
    yield resolution
    if proc.poll() is None:
        proc.kill()
        proc.wait()
