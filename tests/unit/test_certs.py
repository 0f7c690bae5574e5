"""launcher.certs: the CA, the server certificate's SANs, the SuperNode keys, validity, the CLI."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from flwr.cli.supernode.register import try_load_public_key

from launcher.certs import CertBundle, CertError, main, write_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> CertBundle:
    return write_bundle(tmp_path_factory.mktemp("certs"), ["superlink.example.org", "10.1.2.3"],
                        ["cleveland", "va"], days=30)


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ext.get_values_for_type(x509.DNSName), [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]


def test_server_certificate_names_loopback_and_extra_sans(bundle: CertBundle) -> None:
    dns, ips = sans(load_cert(bundle.server_cert))
    assert dns == ["localhost", "superlink.example.org"]
    assert ips == ["127.0.0.1", "::1", "10.1.2.3"]
    assert all(isinstance(ipaddress.ip_address(ip), ipaddress.IPv4Address | ipaddress.IPv6Address) for ip in ips)


def test_server_certificate_is_issued_by_the_ca_for_servers_only(bundle: CertBundle) -> None:
    ca, server = load_cert(bundle.ca_cert), load_cert(bundle.server_cert)
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", "::1", "superlink.example.org", "10.1.2.3"])
def test_tls_handshake_verifies_every_san(bundle: CertBundle, hostname: str) -> None:
    handshake(bundle, hostname)


def test_tls_handshake_rejects_a_name_not_in_the_certificate(bundle: CertBundle) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(bundle, "elsewhere.example.org")


def handshake(bundle: CertBundle, hostname: str) -> None:
    """A real OpenSSL handshake in memory: client trusting ca.crt, server presenting server.crt."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(bundle.server_cert, bundle.server_key)
    client_ctx = ssl.create_default_context(cafile=str(bundle.ca_cert))
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    pytest.fail(f"handshake for {hostname} did not finish")


def test_all_keys_are_ec_p384(bundle: CertBundle) -> None:
    for path in (bundle.ca_key, bundle.server_key):
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    for cert in (bundle.ca_cert, bundle.server_cert):
        public = load_cert(cert).public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp384r1"


def test_supernode_keys_are_openssh_p384_pairs_flower_accepts(bundle: CertBundle) -> None:
    assert set(bundle.nodes) == {"cleveland", "va"}
    for keys in bundle.nodes.values():
        private = serialization.load_ssh_private_key(keys.private_key.read_bytes(), None)
        assert keys.private_key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
        public = serialization.load_ssh_public_key(keys.public_key.read_bytes())
        assert public == private.public_key()
        assert try_load_public_key(keys.public_key)  # what `flwr supernode register` does with the file
    a, b = (serialization.load_ssh_public_key(k.public_key.read_bytes()) for k in bundle.nodes.values())
    assert a != b


def test_private_keys_are_readable_by_the_owner_only(bundle: CertBundle) -> None:
    private = [bundle.ca_key, bundle.server_key, *(k.private_key for k in bundle.nodes.values())]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_validity_starts_now_and_lasts_the_requested_days(bundle: CertBundle) -> None:
    now = dt.datetime.now(dt.UTC)
    for path in (bundle.ca_cert, bundle.server_cert):
        cert = load_cert(path)
        assert cert.not_valid_before_utc <= now
        assert abs(cert.not_valid_after_utc - (now + dt.timedelta(days=30))) < dt.timedelta(minutes=5)
    assert load_cert(bundle.server_cert).not_valid_after_utc <= load_cert(bundle.ca_cert).not_valid_after_utc


@pytest.mark.parametrize(("sans_", "hospitals", "days", "match"), [
    (["not a host!"], [], 30, "neither an IP address nor a DNS name"),
    ([], ["../escape"], 30, "not usable as a file name"),
    ([], ["va", "va"], 30, "repeat"),
    ([], [], 0, "--days"),
])
def test_bad_input_is_refused_before_writing(tmp_path: Path, sans_: list[str], hospitals: list[str], days: int,
                                             match: str) -> None:
    with pytest.raises(CertError, match=match):
        write_bundle(tmp_path / "out", sans_, hospitals, days=days)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cli_writes_the_bundle_and_refuses_to_overwrite_without_force(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    assert main(["--out", str(tmp_path), "--san", "10.0.0.9", "--hospitals", "cleveland", "hungarian"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ca.crt", "ca.key", "cleveland.key", "cleveland.pub", "hungarian.key", "hungarian.pub",
                     "server.crt", "server.key"]
    assert "10.0.0.9" in sans(load_cert(tmp_path / "server.crt"))[1]
    before = (tmp_path / "ca.crt").read_bytes()
    assert main(["--out", str(tmp_path)]) == 2
    assert "already holds" in capsys.readouterr().err
    assert (tmp_path / "ca.crt").read_bytes() == before
    assert main(["--out", str(tmp_path), "--force", "--hospitals"]) == 0
    assert (tmp_path / "ca.crt").read_bytes() != before
