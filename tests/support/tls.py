"""TLS for the managed-Redis tests: a private CA with a server and a client certificate
(made with ``cryptography``), and a private Redis that speaks TLS on a port of its own.

The server certificate names 127.0.0.1 only (an IP address SAN), so a client that
checks host names accepts ``rediss://127.0.0.1`` and refuses ``rediss://localhost``.
"""

from __future__ import annotations

import datetime
import shutil
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from eventstream.embedded import EmbeddedRedis, find_server_binary, free_port
from eventstream.errors import ConfigError
from tests.support.servers import missing

NO_TLS_SERVER = (
    "no Redis server built with TLS: install redis-server (Debian's and Homebrew's have TLS), "
    "or point EVENTSTREAM_REDIS_SERVER at a valkey-server / redis-server built with BUILD_TLS=yes"
)


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate: what EVENTSTREAM_REDIS_TLS_CA_FILE names
    server_cert: Path
    server_key: Path
    client_cert: Path  # for mutual TLS
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("EventStream test CA"))
        .issuer_name(_name("EventStream test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip

    def leaf(name: str, usage: x509.ObjectIdentifier, stem: str) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
        return cert_path, key_path

    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_cert, server_key = leaf("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, "server")
    client_cert, client_key = leaf("eventstream", ExtendedKeyUsageOID.CLIENT_AUTH, "client")
    return Pki(ca_path, server_cert, server_key, client_cert, client_key)


@dataclass
class TlsRedis:
    server: EmbeddedRedis
    tls_port: int

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.tls_port}/0"


def tls_candidates() -> list[str | None]:
    """The binaries that may have TLS, in the order to try them: the embedded one, then
    redis-server and valkey-server on PATH (the embedded build may lack TLS)."""
    return [find_server_binary(), shutil.which("redis-server"), shutil.which("valkey-server")]


def start_tls_redis(data_dir: Path, pki: Pki, auth_clients: str = "no") -> TlsRedis:
    """A private server with TLS on a port of its own (its plain port stays, for the start-up
    probe). ``auth_clients``: ``no``, ``optional`` or ``yes`` (mutual TLS).

    The first binary that starts with TLS is used: the embedded one, then redis-server and
    valkey-server on PATH (the embedded build may lack TLS)."""
    for binary in dict.fromkeys(b for b in tls_candidates() if b):
        tls_port = free_port()
        server = EmbeddedRedis(
            data_dir / Path(binary).name,
            fsync="always",
            extra_args=[
                "--tls-port", str(tls_port),
                "--tls-cert-file", str(pki.server_cert),
                "--tls-key-file", str(pki.server_key),
                "--tls-ca-cert-file", str(pki.ca),
                "--tls-auth-clients", auth_clients,
            ],
        )  # fmt: skip
        server.binary = binary
        try:
            server.start()
        except ConfigError:  # built without TLS: the next one
            continue
        return TlsRedis(server, tls_port)
    missing(NO_TLS_SERVER)
    raise AssertionError("unreachable")
