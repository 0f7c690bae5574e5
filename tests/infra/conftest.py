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
