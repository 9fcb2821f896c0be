"""Test identities: a CA and nodes issued the way the CLI does it (CSR, key stays local)."""

from __future__ import annotations

from cryptography import x509

from gateway.tunnel import pki
from gateway.tunnel.tls import Identity


class TestCa:
    __test__ = False

    def __init__(self, name: str = "Test CA") -> None:
        self.key, self.cert = pki.init_ca(name)

    def identity(self, node: str, days: int = 365) -> Identity:
        key, csr = pki.request(node)
        cert = pki.issue(self.key, self.cert, csr, node, days=days)
        return Identity(node, cert, key, self.cert)

    def issue_for(self, csr: x509.CertificateSigningRequest, node: str) -> x509.Certificate:
        return pki.issue(self.key, self.cert, csr, node)
