"""Every malformed input of tests/corpus/manifest.json is refused by the real entry point.

Each case runs as a subprocess of the command a person would type (``fedheart validate``,
``fedheart check-config``, ``python -m launcher.simulate``, ``python -m launcher.deploy``). The
refusal must exit non-zero, name the problem (the manifest's words), print no traceback and leave
every input file byte-for-byte unchanged. Certificate material is made here, in tmp, by the case
named in the manifest. The subprocesses run concurrently (one per core): each pays the imports.
``fedheart check-config`` cases run as a subprocess once per kind and in process for the rest
(``fedheart_cli.main.main``, stdout/stderr captured): the same code path, without ~7 s of imports each.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from fedheart_cli.main import main as fedheart_main
from launcher.certs import write_bundle
from launcher.flower import REPO_ROOT

CORPUS = REPO_ROOT / "tests" / "corpus"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
CASES = {case["id"]: case for case in MANIFEST["inputs"]}
BIN = Path(sys.executable).parent
HOSPITAL = "cleveland"  # the deploy cases use one hospital's real file (read only)
# check-config cases run as a real subprocess: the first of each kind; the others in process.
AS_SUBPROCESS = {next(c["id"] for c in CASES.values() if c["entry"] == "check-config" and c["kind"] == kind)
                 for kind in {c["kind"] for c in CASES.values() if c["entry"] == "check-config"}}


def _resign(folder: Path, name: str, signer: str, start: dt.datetime, end: dt.datetime) -> None:
    """Rewrite ``name``.crt with new validity dates, signed by ``signer``.key (same subject and key)."""
    cert = x509.load_pem_x509_certificate((folder / f"{name}.crt").read_bytes())
    key = serialization.load_pem_private_key((folder / f"{signer}.key").read_bytes(), password=None)
    builder = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer)
               .public_key(cert.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end))
    for ext in cert.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    new = builder.sign(key, hashes.SHA384())  # type: ignore[arg-type]
    (folder / f"{name}.crt").write_bytes(new.public_bytes(serialization.Encoding.PEM))


def _other_bundle(folder: Path) -> Path:
    return write_bundle(folder.parent / f"{folder.name}-other", hospitals=[HOSPITAL]).folder


NOW = dt.datetime.now(dt.UTC)
PAST = (NOW - dt.timedelta(days=400), NOW - dt.timedelta(days=35))
FUTURE = (NOW + dt.timedelta(days=30), NOW + dt.timedelta(days=400))
SPOIL: dict[str, Callable[[Path], None]] = {
    "expired-server-cert": lambda d: _resign(d, "server", "ca", *PAST),
    "expired-ca": lambda d: _resign(d, "ca", "ca", *PAST),
    "not-yet-valid-server-cert": lambda d: _resign(d, "server", "ca", *FUTURE),
    "wrong-ca": lambda d: shutil.copy(_other_bundle(d) / "ca.crt", d / "ca.crt"),
    "server-key-mismatch": lambda d: shutil.copy(_other_bundle(d) / "server.key", d / "server.key"),
    "missing-server-key": lambda d: (d / "server.key").unlink(),
    "missing-node-key": lambda d: (d / f"{HOSPITAL}.key").unlink(),
    "garbage-ca": lambda d: (d / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n"),
    "garbage-node-key": lambda d: (d / f"{HOSPITAL}.key").write_bytes(os.urandom(300)),
}


_ROWS = ("63.0,1.0,1.0,145.0,233.0,1.0,2.0,150.0,0.0,2.3,3.0,0.0,6.0,0\n"
         "67.0,1.0,4.0,160.0,286.0,0.0,2.0,108.0,1.0,1.5,2.0,3.0,3.0,2\n"
         "67.0,1.0,4.0,120.0,229.0,0.0,2.0,129.0,1.0,2.6,2.0,2.0,7.0,1\n")
# Data files too large to keep in git, written at test time (manifest key "generated").
GENERATED: dict[str, Callable[[Path], None]] = {
    "huge_line.data": lambda path: path.write_text(_ROWS + "1" * 2**21 + "\n" + _ROWS),  # a 2 MiB line 4
}


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    before: dict[Path, str]
    after: dict[Path, str]
    workdir: Path


def _digests(paths: list[Path]) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


def _command(case: dict, tmp: Path, data_dir: Path) -> tuple[list[str], list[Path]]:
    """The command line of a case and the input files it must not change."""
    entry, overrides = case["entry"], list(case.get("overrides", []))
    files = [REPO_ROOT / f for f in case.get("files", [])]
    if entry == "validate" and "generated" in case:
        path = tmp / case["generated"]
        GENERATED[case["generated"]](path)
        return [str(BIN / "fedheart"), "validate", str(path)], [path]
    if entry == "validate":
        return [str(BIN / "fedheart"), "validate", case["file"]], [REPO_ROOT / case["file"]]
    if entry == "check-config":
        return [str(BIN / "fedheart"), "check-config", *overrides], files
    if entry == "simulate":
        return [sys.executable, "-m", "launcher.simulate", "--workdir", str(tmp / "work"), *overrides], files
    command = [sys.executable, "-m", "launcher.deploy", "--data-dir", str(data_dir), "--workdir", str(tmp / "work"),
               "--output-dir", str(tmp / "out"), "--launcher", "flower",  # no policy: these cases are not about it
               f"data.hospitals=[{HOSPITAL}]", "min_hospitals=1", "min_replies=1"]
    if "certs" in case:
        certs = write_bundle(tmp / "certs", hospitals=[HOSPITAL]).folder
        SPOIL[case["certs"]](certs)
        command += ["--certs", str(certs)]
        files += sorted(certs.iterdir())
    return command + overrides, [*files, data_dir / "processed.cleveland.data"]


def _in_process(case: dict, tmp: Path) -> Outcome:
    """``fedheart check-config`` through its main(); an escaping exception would be a traceback."""
    files = [REPO_ROOT / f for f in case.get("files", [])]
    before = _digests(files)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = fedheart_main(["check-config", *case.get("overrides", [])])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Outcome(code, out.getvalue(), err.getvalue(), before, _digests(files), tmp / "work")


@pytest.fixture(scope="module")
def outcomes(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case run once: subprocesses concurrently, in-process cases in this thread."""
    def run(case: dict) -> Outcome:
        tmp = tmp_path_factory.mktemp(case["id"])
        command, files = _command(case, tmp, data_dir)
        before = _digests(files)
        env = {**os.environ, "FEDHEART_OUTPUT_DIR": str(tmp / "out"), "FEDHEART_DATA_DIR": str(data_dir)}
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
        return Outcome(done.returncode, done.stdout, done.stderr, before, _digests(files), tmp / "work")

    local = [c for c in CASES.values() if c["entry"] == "check-config" and c["id"] not in AS_SUBPROCESS]
    spawned = [c for c in CASES.values() if c not in local]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = dict(zip((c["id"] for c in spawned), pool.map(run, spawned), strict=True))
    for case in local:
        results[case["id"]] = _in_process(case, tmp_path_factory.mktemp(case["id"]))
    return results


def test_the_corpus_is_large_and_varied() -> None:
    kinds = {case["kind"] for case in CASES.values()}
    assert len(CASES) >= 30 and {"data", "config", "privacy", "secagg", "certs"} <= kinds
    assert set(SPOIL) == {c["certs"] for c in CASES.values() if "certs" in c}
    assert set(GENERATED) == {c["generated"] for c in CASES.values() if "generated" in c}
    listed = {CORPUS.parent.parent / c["file"] for c in CASES.values() if "file" in c}
    assert listed == set((CORPUS / "data").iterdir()), "every data file of the corpus is in the manifest"


@pytest.mark.parametrize("case_id", list(CASES))
def test_bad_input_is_refused_clearly(case_id: str, outcomes: dict[str, Outcome]) -> None:
    case, out = CASES[case_id], outcomes[case_id]
    text = out.stdout + out.stderr
    assert out.returncode != 0, f"{case_id} was accepted:\n{text}"
    assert "Traceback" not in text, f"{case_id} dumped a traceback:\n{text}"
    for words in case["error"]:
        assert words in text, f"{case_id}: {words!r} not in the error:\n{text}"
    assert out.after == out.before, f"{case_id} changed an input file"
    assert out.before or not (case.get("file") or case.get("generated") or case.get("files") or case.get("certs")), \
        "inputs were hashed"
    if case["entry"] in ("simulate", "deploy"):
        assert not out.workdir.exists(), f"{case_id}: processes were started before the input was refused"
