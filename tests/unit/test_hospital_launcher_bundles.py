"""launcher.hospital.bundles without a SuperNode: an approved bundle installed once per hash and checked
for every task, a bundle that is not the approved one refused, and prompt retries of message parts."""

from __future__ import annotations

import hashlib
import threading
import types
from pathlib import Path

import pytest

from launcher.fab import fab_bytes
from launcher.flower import REPO_ROOT
from launcher.hospital import bundles

pytestmark = pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")


@pytest.fixture(scope="module")
def bundle() -> tuple[bytes, str]:
    content = fab_bytes(REPO_ROOT)
    return content, hashlib.sha256(content).hexdigest()


def _counting_installs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    from flwr.cli import install

    calls: list[Path] = []
    real = install.install_from_fab

    def counted(*args: object, **kwargs: object) -> Path:
        calls.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return calls[-1]

    monkeypatch.setattr(install, "install_from_fab", counted)
    return calls


def test_an_approved_bundle_is_installed_once_read_only_and_compiled(
        tmp_path: Path, bundle: tuple[bytes, str], monkeypatch: pytest.MonkeyPatch) -> None:
    content, digest = bundle
    calls = _counting_installs(monkeypatch)
    killed = tmp_path / bundles.RECORDS / "staging-1" / "apps" / "half-copied"  # an install killed midway
    killed.mkdir(parents=True)
    first = bundles.install_approved(content, approved_hash=digest, home=tmp_path)
    again = bundles.install_approved(content, approved_hash=digest.upper(), home=tmp_path)
    assert first == again and len(calls) == 1, "a second task of the same bundle unpacked it again"
    # Flower's own path for the app (run_clientapp loads it from there by fab id, version and hash)
    assert first.parent == tmp_path / "apps" and first.name.endswith(f".{digest[:8]}")
    assert (first / "client_app" / "app.py").read_bytes() == (REPO_ROOT / "client_app" / "app.py").read_bytes()
    assert list(first.rglob("*.pyc")), "the bundle was not compiled at install"
    assert not first.stat().st_mode & 0o222 and not (first / "client_app" / "app.py").stat().st_mode & 0o222
    assert not list((tmp_path / bundles.RECORDS).glob("staging-*")), "a staging folder was left behind"


@pytest.mark.parametrize("change", ["edited", "added", "removed"])
def test_an_installed_bundle_that_changed_is_installed_afresh(
        tmp_path: Path, bundle: tuple[bytes, str], monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    content, digest = bundle
    app_dir = bundles.install_approved(content, approved_hash=digest, home=tmp_path)
    target = app_dir / "client_app" / ("planted.py" if change == "added" else "app.py")
    target.parent.chmod(0o755)
    if change == "removed":
        target.unlink()
    else:
        target.write_text("open('/tmp/leak', 'w')\n")
    calls = _counting_installs(monkeypatch)
    assert bundles.install_approved(content, approved_hash=digest, home=tmp_path) == app_dir
    assert len(calls) == 1, f"a bundle whose installed file was {change} was used as it was"
    assert not (app_dir / "client_app" / "planted.py").exists()
    assert (app_dir / "client_app" / "app.py").read_bytes() == (REPO_ROOT / "client_app" / "app.py").read_bytes()


def test_a_folder_without_a_record_is_never_trusted(tmp_path: Path, bundle: tuple[bytes, str]) -> None:
    """Flower reuses any folder of the right name; the launcher only one it installed and recorded."""
    content, digest = bundle
    app_dir = bundles.install_approved(content, approved_hash=digest, home=tmp_path)
    (tmp_path / bundles.RECORDS / f"{digest}.json").unlink()
    app_dir.chmod(0o755)
    (app_dir / "planted.py").write_text("x = 1\n")
    assert bundles.install_approved(content, approved_hash=digest, home=tmp_path) == app_dir
    assert not (app_dir / "planted.py").exists()


def test_a_bundle_that_is_not_the_approved_one_is_refused_naming_both_hashes(
        tmp_path: Path, bundle: tuple[bytes, str]) -> None:
    content, digest = bundle
    other = "f" * 64
    with pytest.raises(bundles.BundleError) as refused:
        bundles.install_approved(content, approved_hash=other, home=tmp_path)
    assert digest in str(refused.value) and other in str(refused.value)
    assert not (tmp_path / "apps").exists(), "an unapproved bundle was unpacked"


def test_install_once_replaces_the_installer_run_clientapp_calls(tmp_path: Path, bundle: tuple[bytes, str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    content, digest = bundle
    monkeypatch.setenv("FLWR_HOME", str(tmp_path))
    module = types.SimpleNamespace(install_from_fab=None)
    bundles.install_once(module, digest)  # type: ignore[arg-type]
    app_dir = module.install_from_fab(content, skip_prompt=True)  # as run_clientapp calls it
    assert app_dir.parent == tmp_path / "apps"
    with pytest.raises(bundles.BundleError):
        module.install_from_fab(content + b"x", skip_prompt=True)


def test_message_parts_not_yet_at_the_supernode_are_retried_within_a_fraction_of_a_second(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.app import ConfigRecord, RecordDict
    from flwr.supercore.inflatable import inflatable_utils
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree
    from flwr.supernode.runtime import run_clientapp as flower

    waits: list[float] = []

    class RecordingEvent(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(float(timeout or 0))
            return super().wait(0)  # the retry itself at once: the test records the backoff asked for

    # only Flower's pull loop sees the recording event (its early-stop event, whose wait is the backoff)
    monkeypatch.setattr(inflatable_utils, "threading", types.SimpleNamespace(Lock=threading.Lock,
                                                                            Event=RecordingEvent))
    record = RecordDict({"config": ConfigRecord({"lr": 0.1})})
    contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(record).items()}
    misses = dict.fromkeys(contents, 3)  # each part arrives at the SuperNode after three pulls

    def pull(object_id: str) -> bytes:
        if misses[object_id]:
            misses[object_id] -= 1
            raise inflatable_utils.ObjectUnavailableError(object_id)
        return contents[object_id]

    module = types.SimpleNamespace(pull_and_inflate_object_from_tree=flower.pull_and_inflate_object_from_tree)
    bundles.quicken_object_pulls(module)  # type: ignore[arg-type]
    pulled = module.pull_and_inflate_object_from_tree(get_object_tree(record), pull, lambda _oid: None)
    assert pulled.object_id == record.object_id
    assert len(waits) == 3 * len(contents)
    assert max(waits) <= bundles.OBJECT_PULL_BACKOFF_CAP * 1.2, f"retries waited {max(waits):.2f}s"
