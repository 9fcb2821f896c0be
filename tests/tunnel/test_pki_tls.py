from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from gateway.tunnel import pki
from gateway.tunnel.errors import PeerRefused, PkiError
from gateway.tunnel.tls import Identity, TlsSession, make_context

from .pkihelp import TestCa


def pump(a: TlsSession, b: TlsSession) -> None:
    for _ in range(20):
        out_a, out_b = a.data_to_send(), b.data_to_send()
        if not out_a and not out_b:
            return
        if out_a:
            b.receive(out_a)
        if out_b:
            a.receive(out_b)


def handshake(
    client_id: Identity,
    server_id: Identity,
    *,
    client_trusts: Callable[[str], bool] = lambda n: True,
    server_trusts: Callable[[str], bool] = lambda n: True,
    expected: str | None = None,
) -> tuple[TlsSession, TlsSession]:
    client = TlsSession(
        make_context(client_id, True),
        client=True,
        trusted=client_trusts,
        expected_peer=expected or server_id.node,
    )
    server = TlsSession(make_context(server_id, False), client=False, trusted=server_trusts)
    client.start()
    pump(client, server)
    return client, server


def test_mutual_tls_13_with_matching_exporters() -> None:
    ca = TestCa()
    client, server = handshake(ca.identity("site1"), ca.identity("hub1"))
    assert client.handshake_done and server.handshake_done
    assert client.peer_node == "hub1" and server.peer_node == "site1"
    assert client.exporter(b"\x00\x00\x00\x01") == server.exporter(b"\x00\x00\x00\x01")
    assert client.exporter(b"\x00\x00\x00\x01") != client.exporter(b"\x00\x00\x00\x02")
    client.send(b"hello hub")
    pump(client, server)
    assert server.received_data() == b"hello hub"


def test_foreign_ca_is_refused_with_a_reason() -> None:
    ours, theirs = TestCa("Ours"), TestCa("Foreign")
    with pytest.raises(PeerRefused) as refused:
        handshake(theirs.identity("intruder"), ours.identity("hub1"))
    assert "CA" in refused.value.reason


def test_untrusted_or_unexpected_node_is_refused() -> None:
    ca = TestCa()
    with pytest.raises(PeerRefused, match="not on the trusted list"):
        handshake(ca.identity("site9"), ca.identity("hub1"), server_trusts=lambda n: n != "site9")
    with pytest.raises(PeerRefused, match="certificate names 'hub2'"):
        handshake(ca.identity("site1"), ca.identity("hub2"), expected="hub1")


def test_expired_certificate_is_refused() -> None:
    ca = TestCa()
    key, csr = pki.request("site1")
    old = pki.issue(ca.key, ca.cert, csr, "site1", days=1, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
    with pytest.raises(PeerRefused, match="expired"):
        handshake(Identity("site1", old, key, ca.cert), ca.identity("hub1"))


def test_issue_checks_the_csr() -> None:
    ca = TestCa()
    _, csr = pki.request("site1")
    with pytest.raises(PkiError, match="not 'site2'"):
        pki.issue(ca.key, ca.cert, csr, "site2")
    with pytest.raises(PkiError):
        pki.request("Bad Name")
    cert = pki.issue(ca.key, ca.cert, csr, "site1", days=30)
    pki.verify_issued_by(cert, ca.cert)
    assert pki.cert_node(cert) == "site1"
    assert not pki.renewal_due(cert, dt.timedelta(days=7))
    assert pki.renewal_due(cert, dt.timedelta(days=31))
    with pytest.raises(PkiError):
        pki.verify_issued_by(cert, TestCa("Other").cert)


def test_renewal_proves_possession_of_the_current_key() -> None:
    ca = TestCa()
    me = ca.identity("site1")
    new_key, req = pki.make_renewal("site1", me.key, me.cert)
    decoded = pki.RenewalRequest.decode(req.encode())
    csr = pki.check_renewal(decoded, ca.cert, sender="site1")
    renewed = pki.issue(ca.key, ca.cert, csr, "site1")
    assert renewed.public_key().public_numbers() == new_key.public_key().public_numbers()
    with pytest.raises(PkiError, match="sent by 'site2'"):
        pki.check_renewal(decoded, ca.cert, sender="site2")
    other = ca.identity("site1")  # a second key: the signature must be by the certificate's key
    forged = pki.RenewalRequest(req.csr_pem, pki.cert_pem(other.cert), req.signature)
    with pytest.raises(PkiError, match="not signed"):
        pki.check_renewal(forged, ca.cert, sender="site1")
    with pytest.raises(PkiError):
        pki.RenewalRequest.decode(b"\x00\x00\x00\x09abc")


def test_private_keys_are_written_owner_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = pki.new_key()
    path = tmp_path / "k" / "site.key"
    pki.write_private(path, pki.key_pem(key))
    assert path.stat().st_mode & 0o777 == 0o600
    assert pki.load_key(path).public_key().public_numbers() == key.public_key().public_numbers()
