"""Mutual TLS 1.3 for the control channel, sans-I/O: pyOpenSSL over memory BIOs.

``TlsSession`` takes bytes from the TCP stream and returns bytes to write, like
h11: it never touches a socket. After the handshake it checks the peer's identity
(certificate common name) against the trusted list and, when dialling, against the
node we meant to reach; every refusal carries a reason for the log. It also offers
the RFC 5705 exporter from which the media keys derive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from OpenSSL import SSL, crypto

from gateway.tunnel.errors import PeerRefused, PkiError, TunnelError
from gateway.tunnel.keys import EXPORTER_LABEL, EXPORTER_LENGTH
from gateway.tunnel.pki import PrivateKey, cert_node

# OpenSSL's X509_V_ERR_* codes we expect to meet, in words for the log.
_VERIFY_ERRORS = {
    2: "unable to get the issuer certificate",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate (not issued by our CA)",
    19: "self-signed certificate in the chain (a foreign CA)",
    20: "not signed by our CA (unable to get local issuer certificate)",
    21: "unable to verify the first certificate",
    26: "certificate not meant for this purpose",
}


@dataclass(frozen=True)
class Identity:
    node: str
    cert: x509.Certificate
    key: PrivateKey
    ca: x509.Certificate


def make_context(identity: Identity, client: bool) -> SSL.Context:
    method = SSL.TLS_CLIENT_METHOD if client else SSL.TLS_SERVER_METHOD
    ctx = SSL.Context(method)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_options(SSL.OP_NO_TICKET)
    ctx.use_certificate(identity.cert)
    ctx.use_privatekey(identity.key)
    ctx.check_privatekey()
    ctx.get_cert_store().add_cert(crypto.X509.from_cryptography(identity.ca))  # type: ignore[union-attr]
    return ctx


class TlsSession:
    def __init__(
        self,
        context: SSL.Context,
        *,
        client: bool,
        trusted: Callable[[str], bool],
        expected_peer: str | None = None,
    ) -> None:
        self._verify_error: str | None = None
        self._trusted = trusted
        self._expected = expected_peer
        self.client = client
        self._conn = SSL.Connection(context, None)
        # Per connection, not per context: the callback records this session's refusal reason.
        self._conn.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._on_verify)
        if client:
            self._conn.set_connect_state()
        else:
            self._conn.set_accept_state()
        self.handshake_done = False
        self.peer_node: str | None = None
        self._plain = bytearray()
        self.closed = False

    def _on_verify(self, conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        if not ok and self._verify_error is None:
            subject = cert.to_cryptography().subject.rfc4514_string()
            self._verify_error = f"{_VERIFY_ERRORS.get(errno, f'verify error {errno}')} (certificate {subject})"
        return bool(ok)

    def start(self) -> None:
        """Begin the handshake (the client's hello becomes available from ``data_to_send``)."""
        self._step()

    def receive(self, data: bytes) -> None:
        if data:
            self._conn.bio_write(data)
        self._step()

    def _step(self) -> None:
        try:
            if not self.handshake_done:
                self._conn.do_handshake()
                self.handshake_done = True
                self._check_peer()
            while True:
                self._plain += self._conn.recv(65536)
        except (SSL.WantReadError, SSL.WantWriteError):
            return
        except SSL.ZeroReturnError:
            self.closed = True
        except SSL.Error as exc:
            if self._verify_error is not None:
                raise PeerRefused(self._verify_error) from None
            raise TunnelError(f"TLS failed: {_describe(exc)}") from None

    def _check_peer(self) -> None:
        cert = self._conn.get_peer_certificate(as_cryptography=True)
        if cert is None:
            raise PeerRefused("peer sent no certificate")
        try:
            node = cert_node(cert)
        except PkiError as exc:
            raise PeerRefused(str(exc)) from None
        if self._expected is not None and node != self._expected:
            raise PeerRefused(f"dialled {self._expected!r} but the certificate names {node!r}")
        if not self._trusted(node):
            raise PeerRefused(f"node {node!r} is signed by our CA but not on the trusted list")
        self.peer_node = node

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            sent = self._conn.send(view[:16384])
            view = view[sent:]

    def data_to_send(self) -> bytes:
        out = bytearray()
        while True:
            try:
                chunk = self._conn.bio_read(65536)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def received_data(self) -> bytes:
        out, self._plain = bytes(self._plain), bytearray()
        return out

    def close(self) -> None:
        try:
            self._conn.shutdown()
        except SSL.Error:
            pass

    def exporter(self, context: bytes) -> bytes:
        if not self.handshake_done:
            raise TunnelError("no keying material before the handshake")
        return self._conn.export_keying_material(EXPORTER_LABEL, EXPORTER_LENGTH, context)


def _describe(exc: SSL.Error) -> str:
    parts = []
    for item in exc.args[0] if exc.args and isinstance(exc.args[0], list) else []:
        parts.append(str(item[-1]) if isinstance(item, tuple) else str(item))
    return "; ".join(parts) or str(exc)
