"""TLS material: the gateway's certificate (configured, or generated at first start) and contexts.

One certificate serves SIP over TLS and the HTTPS pages (browser phone, TV). A generated one is
self-signed (ECDSA P-256, ten years), names every address and host name we know the gateway by,
and its key is written 0600; an operator with a real certificate configures it instead.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertificateFiles:
    certificate: Path
    private_key: Path
    generated: bool


def ensure_certificate(folder: Path, common_name: str, names: list[str]) -> CertificateFiles:
    """A self-signed certificate for ``names`` (IPs or DNS names) under ``folder``, made once."""
    cert_path, key_path = folder / "gateway.crt", folder / "gateway.key"
    if cert_path.exists() and key_path.exists():
        return CertificateFiles(cert_path, key_path, generated=False)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in dict.fromkeys(["localhost", "127.0.0.1", socket.gethostname(), *names]):
        if not name or name in ("0.0.0.0", "::"):
            continue
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertificateFiles(cert_path, key_path, generated=True)


def server_context(files: CertificateFiles | tuple[Path, Path]) -> ssl.SSLContext:
    cert, key = (files.certificate, files.private_key) if isinstance(files, CertificateFiles) else files
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def client_context(ca_file: str = "", verify: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        # Phones present self-signed certificates; an operator may accept that explicitly.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
