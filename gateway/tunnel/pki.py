"""The tunnel's private CA: keys, CSRs, certificates and renewal, with ``cryptography.x509``.

A site makes its own key and CSR (``request``); the CA signs the CSR (``issue``) so the
site's key never leaves the site. A node's identity is its certificate's common name
(also its DNS subject-alternative name). Renewal runs over the existing tunnel: the
site sends a CSR for a fresh key together with a signature by its *current* key
(``RenewalRequest``), so the CA knows the request comes from the holder of the
certificate being renewed. Revocation is removing a node from its peers' trusted
lists (the ``[tunnel] peers``): short-lived certificates plus that list replace CRLs.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.tunnel.errors import PkiError

NODE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
PrivateKey = ec.EllipticCurvePrivateKey


def check_node_name(name: str) -> str:
    if not NODE_NAME.match(name):
        raise PkiError(f"{name!r} is not a node name (lower-case letters, digits, '.', '_', '-')")
    return name


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def init_ca(name: str, days: int = 3650, now: dt.datetime | None = None) -> tuple[PrivateKey, x509.Certificate]:
    now = now or _now()
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def request(node: str, key: PrivateKey | None = None) -> tuple[PrivateKey, x509.CertificateSigningRequest]:
    check_node_name(node)
    key = key or new_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(node)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, csr


def csr_node(csr: x509.CertificateSigningRequest) -> str:
    if not csr.is_signature_valid:
        raise PkiError("the CSR's signature does not verify")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise PkiError("the CSR must name exactly one node (common name)")
    return check_node_name(str(names[0].value))


def issue(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    csr: x509.CertificateSigningRequest,
    node: str,
    days: int = 365,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Sign ``csr`` for ``node``; refuses a CSR that names another node."""
    named = csr_node(csr)
    if named != node:
        raise PkiError(f"the CSR is for {named!r}, not {node!r}")
    now = now or _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]))
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(node)]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def cert_node(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise PkiError("certificate has no single common name")
    return str(names[0].value)


def verify_issued_by(cert: x509.Certificate, ca_cert: x509.Certificate, now: dt.datetime | None = None) -> None:
    """Raise PkiError unless ``cert`` is signed by ``ca_cert`` and valid at ``now``."""
    now = now or _now()
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise PkiError("certificate is not signed by this CA") from None
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise PkiError(f"certificate is not valid now (valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)")


def renewal_due(cert: x509.Certificate, before: dt.timedelta, now: dt.datetime | None = None) -> bool:
    return (now or _now()) >= cert.not_valid_after_utc - before


@dataclass(frozen=True)
class RenewalRequest:
    """A CSR for a fresh key, signed over by the key of the certificate being renewed."""

    csr_pem: bytes
    cert_pem: bytes
    signature: bytes

    def encode(self) -> bytes:
        parts = (self.csr_pem, self.cert_pem, self.signature)
        return b"".join(len(p).to_bytes(4, "big") + p for p in parts)

    @classmethod
    def decode(cls, data: bytes) -> RenewalRequest:
        parts: list[bytes] = []
        offset = 0
        for _ in range(3):
            if offset + 4 > len(data):
                raise PkiError("truncated renewal request")
            size = int.from_bytes(data[offset : offset + 4], "big")
            parts.append(data[offset + 4 : offset + 4 + size])
            offset += 4 + size
            if len(parts[-1]) != size:
                raise PkiError("truncated renewal request")
        return cls(*parts)


def make_renewal(
    node: str, current_key: PrivateKey, current_cert: x509.Certificate, new_key: PrivateKey | None = None
) -> tuple[PrivateKey, RenewalRequest]:
    new, csr = request(node, new_key)
    csr_bytes = csr.public_bytes(serialization.Encoding.PEM)
    signature = current_key.sign(csr_bytes, ec.ECDSA(hashes.SHA256()))
    return new, RenewalRequest(csr_bytes, cert_pem(current_cert), signature)


def check_renewal(
    req: RenewalRequest, ca_cert: x509.Certificate, sender: str, now: dt.datetime | None = None
) -> x509.CertificateSigningRequest:
    """The CSR to sign if ``sender`` holds a valid certificate of ours for the node it asks for."""
    try:
        current = x509.load_pem_x509_certificate(req.cert_pem)
        csr = x509.load_pem_x509_csr(req.csr_pem)
    except ValueError:
        raise PkiError("renewal request holds an unreadable certificate or CSR") from None
    verify_issued_by(current, ca_cert, now)
    node = cert_node(current)
    if node != sender or csr_node(csr) != node:
        raise PkiError(f"renewal for {csr_node(csr)!r} sent by {sender!r} with a certificate for {node!r}")
    public = current.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise PkiError("current certificate does not hold an EC key")
    try:
        public.verify(req.signature, req.csr_pem, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise PkiError("renewal request is not signed by the current certificate's key") from None
    return csr


# -- files


def write_private(path: Path, data: bytes) -> None:
    """Write a key readable by its owner only, created with those rights (no window of exposure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def load_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read private key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path} is not an EC private key")
    return key


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read certificate {path}: {exc}") from None


def load_csr(path: Path) -> x509.CertificateSigningRequest:
    try:
        return x509.load_pem_x509_csr(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read CSR {path}: {exc}") from None
