"""The page's TLS certificate: from config, or generated at first start under data_dir/webrtc/.

A generated certificate is self-signed (ECDSA P-256, ten years), names every
address and host name we know the gateway by, and its key is written 0600.
Browsers warn once about it; an operator who has a real certificate sets
``webrtc.certificate`` and ``webrtc.private_key``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_FILE = "https-cert.pem"
KEY_FILE = "https-key.pem"


def _san(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in names:
        if not name or name in seen or name in ("0.0.0.0", "::"):
            continue
        seen.add(name)
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def generate(folder: Path, names: Iterable[str]) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    all_names = ["localhost", "127.0.0.1", socket.gethostname(), *names]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Seabridge gateway")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(_san(all_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = folder / KEY_FILE, folder / CERT_FILE
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def load_or_generate(
    certificate: str, private_key: str, folder: Path, names: Iterable[str]
) -> tuple[ssl.SSLContext, Path, bool]:
    """A server TLS context; the bool says whether a certificate was generated just now."""
    created = False
    if certificate:
        cert_path, key_path = Path(certificate), Path(private_key)
    else:
        cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
        if not (cert_path.exists() and key_path.exists()):
            cert_path, key_path = generate(folder, names)
            created = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path, created
