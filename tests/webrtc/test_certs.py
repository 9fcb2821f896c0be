"""The page's certificate: generated at first start when none is configured, then reused."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509

from gateway.webrtc import certs


def test_a_generated_certificate_names_the_gateway_and_keeps_its_key_private(tmp_path: Path) -> None:
    context, cert_path, created = certs.load_or_generate("", "", tmp_path / "webrtc", ["10.20.0.1", "gw.example"])
    assert created and context is not None
    assert stat.S_IMODE((tmp_path / "webrtc" / certs.KEY_FILE).stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.20.0.1") in names.get_values_for_type(x509.IPAddress)
    assert "gw.example" in names.get_values_for_type(x509.DNSName)
    _context, again, created_again = certs.load_or_generate("", "", tmp_path / "webrtc", [])
    assert not created_again and again.read_bytes() == cert_path.read_bytes()
