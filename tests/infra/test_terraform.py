"""Terraform: fmt, offline init against the provider mirror, validate, `terraform test`.

The configuration is copied to a temp dir so no .terraform/ or lock file is
left in the repository; the AWS provider comes from the filesystem mirror
named in the project's CLI config (terraform/cli-config.tfrc, path overridable
with $TF_PLUGIN_MIRROR). `terraform test` runs against `mock_provider "aws"`.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest

from .conftest import DEFAULT_PLUGIN_MIRROR, TERRAFORM_DIR, require_tool, run, write_cli_config


@pytest.fixture(scope="module")
def tf(tmp_path_factory):
    """(terraform binary, env, initialised working copy of terraform/)."""
    binary = require_tool("terraform")
    tmp = tmp_path_factory.mktemp("tf")
    work = tmp / "terraform"
    shutil.copytree(
        TERRAFORM_DIR,
        work,
        ignore=shutil.ignore_patterns(".terraform", ".terraform.lock.hcl", "*.tfstate*", "*.tfvars"),
    )
    env = dict(os.environ)
    env.update(
        TF_CLI_CONFIG_FILE=str(write_cli_config(tmp)),
        TF_DATA_DIR=str(tmp / "tfdata"),
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",
    )
    env.pop("TF_WORKSPACE", None)
    init = run([binary, "init", "-backend=false", "-input=false", "-no-color"], cwd=work, env=env)
    mirror = os.environ.get("TF_PLUGIN_MIRROR", DEFAULT_PLUGIN_MIRROR)
    assert init.returncode == 0, f"terraform init against mirror {mirror} failed:\n{init.stdout}\n{init.stderr}"
    return binary, env, work


def test_cli_config_points_at_the_mirror(tmp_path, monkeypatch):
    committed = (TERRAFORM_DIR / "cli-config.tfrc").read_text()
    assert f'path    = "{DEFAULT_PLUGIN_MIRROR}"' in committed
    assert "filesystem_mirror" in committed and 'include = ["registry.terraform.io/hashicorp/aws"]' in committed
    monkeypatch.setenv("TF_PLUGIN_MIRROR", "/srv/mirror")
    assert 'path    = "/srv/mirror"' in write_cli_config(tmp_path).read_text()


def test_fmt(tf):
    binary, env, work = tf
    result = run([binary, "fmt", "-check", "-recursive", "-diff", "-no-color"], cwd=work, env=env)
    assert result.returncode == 0, f"terraform fmt -check found unformatted files:\n{result.stdout}"


def test_only_the_aws_provider_and_local_modules(tf):
    _, _, work = tf
    for path in work.rglob("*.tf"):
        text = path.read_text()
        for source in re.findall(r'^\s*source\s*=\s*"([^"]+)"', text, re.M):
            assert source in {"hashicorp/aws"} or source.startswith("./"), f"{path}: non-local source {source}"
    lock = (work / ".terraform.lock.hcl").read_text()
    assert re.findall(r'provider "([^"]+)"', lock) == ["registry.terraform.io/hashicorp/aws"]


def test_validate(tf):
    binary, env, work = tf
    result = run([binary, "validate", "-no-color"], cwd=work, env=env)
    assert result.returncode == 0, f"terraform validate failed:\n{result.stdout}\n{result.stderr}"


def test_terraform_test_suite(tf):
    binary, env, work = tf
    result = run([binary, "test", "-no-color"], cwd=work, env=env, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"terraform test failed:\n{output}"
    passed = re.search(r"Success! (\d+) passed, 0 failed", output)
    assert passed and int(passed.group(1)) >= 7, output
    # Every test file under terraform/tests ran.
    for test_file in sorted((work / "tests").glob("*.tftest.hcl")):
        assert f"tests/{test_file.name}... pass" in output, output


def test_iam_prefix_matches_the_app_tracking_config():
    """The SageMaker policies only allow names with terraform's experiment_prefix: the app must use it."""
    import yaml

    from .conftest import REPO, tf_variable_default

    tracking = yaml.safe_load((REPO / "conf" / "tracking" / "sagemaker.yaml").read_text())
    assert tracking["experiment_prefix"] == tf_variable_default("experiment_prefix")
