"""Certificates and keys for a TLS SuperLink with SuperNode authentication.

    python -m launcher.certs --out DIR [--san HOST ...] [--hospitals NAME ...] [--days N] [--force]

Writes into DIR:

    ca.crt, ca.key              a private certificate authority (the SuperNodes' --root-certificates)
    server.crt, server.key      the SuperLink's certificate, signed by the CA; its SANs are
                                localhost, 127.0.0.1, ::1 and every --san (DNS name or IP address)
    <name>.key, <name>.pub      per hospital: an EC P-384 key pair in OpenSSH format
                                (--auth-supernode-private-key / ``flwr supernode register``)

All keys are EC P-384; private keys are written with mode 0600.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedheart.schema import HOSPITALS

LOOPBACK_SANS = ("localhost", "127.0.0.1", "::1")
DEFAULT_DAYS = 365
CURVE = ec.SECP384R1
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class CertError(ValueError):
    """Bad input for the certificates (a SAN, a hospital name, an existing file)."""


@dataclass(frozen=True)
class NodeKeys:
    """One hospital's SuperNode key pair (OpenSSH format)."""

    name: str
    private_key: Path
    public_key: Path


@dataclass(frozen=True)
class CertBundle:
    """Paths of everything :func:`write_bundle` wrote."""

    folder: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    nodes: dict[str, NodeKeys]


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(CURVE())


def san_entry(host: str) -> x509.GeneralName:
    """An IP address SAN for an address, else a DNS-name SAN."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not re.fullmatch(r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*",
                        host):
        raise CertError(f"--san {host!r} is neither an IP address nor a DNS name")
    return x509.DNSName(host)


def server_sans(extra: Iterable[str] = ()) -> list[str]:
    """Loopback names plus ``extra``, without duplicates, in order."""
    return list(dict.fromkeys([*LOOPBACK_SANS, *extra]))


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    if days < 1:
        raise CertError(f"--days must be at least 1, got {days}")
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)  # 5 min slack for clock skew


def make_ca(days: int = DEFAULT_DAYS, common_name: str = "fedheart CA"
            ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA that may sign server certificates only (path length 0)."""
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedheart"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start, end = _validity(days)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA384()))
    return cert, key


def make_server_cert(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, sans: Sequence[str],
                     days: int = DEFAULT_DAYS) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A TLS server certificate for ``sans`` (the first one is also the common name)."""
    if not sans:
        raise CertError("a server certificate needs at least one SAN")
    key = new_key()
    start, end = _validity(days)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedheart"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(min(end, ca_cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName([san_entry(s) for s in sans]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(ca_key, hashes.SHA384()))
    return cert, key


def _write(path: Path, data: bytes, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    if private:
        os.chmod(path, 0o600)  # also when the file existed with looser permissions


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_node_keys(folder: Path, name: str) -> NodeKeys:
    """``<name>.key`` (OpenSSH private key) and ``<name>.pub`` (OpenSSH public key line)."""
    if not NAME_PATTERN.fullmatch(name):
        raise CertError(f"hospital name {name!r} is not usable as a file name (letters, digits, '.', '_', '-')")
    key = new_key()
    keys = NodeKeys(name, folder / f"{name}.key", folder / f"{name}.pub")
    _write(keys.private_key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                               serialization.NoEncryption()), private=True)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(keys.public_key, public + f" fedheart-{name}\n".encode())
    return keys


def bundle_paths(folder: Path, hospitals: Sequence[str]) -> list[Path]:
    """Every file :func:`write_bundle` writes for these hospitals."""
    names = ["ca.crt", "ca.key", "server.crt", "server.key"]
    names += [f"{h}.{ext}" for h in hospitals for ext in ("key", "pub")]
    return [folder / n for n in names]


def write_bundle(folder: Path, sans: Iterable[str] = (), hospitals: Sequence[str] = (),
                 days: int = DEFAULT_DAYS, force: bool = False) -> CertBundle:
    """CA, server certificate (loopback + ``sans``) and one key pair per hospital, in ``folder``."""
    if len(set(hospitals)) != len(hospitals):
        raise CertError(f"hospital names repeat: {list(hospitals)}")
    all_sans = server_sans(sans)
    for s in all_sans:
        san_entry(s)  # validate before writing anything
    for h in hospitals:
        if not NAME_PATTERN.fullmatch(h):
            raise CertError(f"hospital name {h!r} is not usable as a file name (letters, digits, '.', '_', '-')")
    folder.mkdir(parents=True, exist_ok=True)
    existing = [p.name for p in bundle_paths(folder, hospitals) if p.exists()]
    if existing and not force:
        raise CertError(f"{folder} already holds {', '.join(existing)}; use another --out or --force to replace")
    ca_cert, ca_key = make_ca(days)
    server_cert, server_key = make_server_cert(ca_cert, ca_key, all_sans, days)
    bundle = CertBundle(folder, folder / "ca.crt", folder / "ca.key", folder / "server.crt", folder / "server.key",
                        {})
    _write(bundle.ca_key, _pem_key(ca_key), private=True)
    _write(bundle.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(bundle.server_key, _pem_key(server_key), private=True)
    _write(bundle.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))
    for h in hospitals:
        bundle.nodes[h] = write_node_keys(folder, h)
    return bundle


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise CertError(f"{path} is not a PEM certificate ({exc})") from None


def _check_validity(path: Path, cert: x509.Certificate, now: dt.datetime) -> None:
    if cert.not_valid_after_utc <= now:
        raise CertError(f"{path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; "
                        "make new material with python -m launcher.certs")
    if cert.not_valid_before_utc > now:
        raise CertError(f"{path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (clock skew?)")


def verify_material(folder: Path, hospitals: Sequence[str]) -> CertBundle:
    """Check an existing bundle before anything starts: every file present, certificates in date,
    the server certificate signed by ``ca.crt`` and matching ``server.key``, node keys readable.

    Raises CertError naming the file and the problem; returns the bundle's paths.
    """
    missing = [p.name for p in bundle_paths(folder, hospitals) if p.name != "ca.key" and not p.is_file()]
    if missing:
        raise CertError(f"{folder} lacks {', '.join(missing)} (missing key or certificate file)")
    bundle = CertBundle(folder, folder / "ca.crt", folder / "ca.key", folder / "server.crt", folder / "server.key",
                        {h: NodeKeys(h, folder / f"{h}.key", folder / f"{h}.pub") for h in hospitals})
    now = dt.datetime.now(dt.UTC)
    ca, server = _load_cert(bundle.ca_cert), _load_cert(bundle.server_cert)
    _check_validity(bundle.ca_cert, ca, now)
    _check_validity(bundle.server_cert, server, now)
    try:
        server.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertError(f"{bundle.server_cert} is not signed by the CA in {bundle.ca_cert} "
                        f"(wrong CA: {exc or 'bad signature'})") from None
    try:
        server_key = serialization.load_pem_private_key(bundle.server_key.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise CertError(f"{bundle.server_key} is not a readable unencrypted PEM private key ({exc})") from None
    if server_key.public_key() != server.public_key():
        raise CertError(f"{bundle.server_key} does not belong to {bundle.server_cert} (key mismatch)")
    for keys in bundle.nodes.values():
        try:
            serialization.load_ssh_private_key(keys.private_key.read_bytes(), password=None)
            serialization.load_ssh_public_key(keys.public_key.read_bytes().strip())
        except (ValueError, TypeError) as exc:
            raise CertError(f"{keys.private_key} / {keys.public_key}: not an OpenSSH key pair ({exc})") from None
    return bundle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the files")
    parser.add_argument("--san", action="append", default=[], metavar="HOST",
                        help="extra DNS name or IP address the SuperLink is reached at (repeatable)")
    parser.add_argument("--hospitals", nargs="*", default=[h.key for h in HOSPITALS], metavar="NAME",
                        help="one SuperNode key pair per name (default: the four UCI hospitals)")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"validity (default {DEFAULT_DAYS})")
    parser.add_argument("--force", action="store_true", help="replace files that already exist")
    args = parser.parse_args(argv)
    try:
        bundle = write_bundle(args.out, args.san, args.hospitals, args.days, args.force)
    except CertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"CA:      {bundle.ca_cert} (key {bundle.ca_key.name}: keep it private)")
    print(f"Server:  {bundle.server_cert}, {bundle.server_key.name}; SANs: {', '.join(server_sans(args.san))}")
    for keys in bundle.nodes.values():
        print(f"Node:    {keys.name}: {keys.private_key.name} (private), {keys.public_key.name} "
              f"(register with `flwr supernode register {keys.public_key} CONNECTION`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
