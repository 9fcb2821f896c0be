"""Certificate renewal over the tunnel, on the store-and-forward message channel.

A node whose certificate nears expiry makes a fresh key, keeps it beside its
current key (``<key>.next``), and sends a ``RenewalRequest`` to the CA node (topic
``pki.renew``). The CA node checks the request (our CA, the sender's own name,
signed by the current key, on its ``renewal_allowed`` list) and answers with the new
certificate (topic ``pki.issued``). The node installs it for new connections;
connections already up keep going.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509

from gateway.tunnel import pki
from gateway.tunnel.errors import PkiError
from gateway.tunnel.service import TunnelService
from gateway.tunnel.tls import Identity

log = logging.getLogger("seabridge.tunnel")

TOPIC_REQUEST = "pki.renew"
TOPIC_ISSUED = "pki.issued"


@dataclass(frozen=True)
class IdentityFiles:
    ca: Path
    cert: Path
    key: Path

    @property
    def next_key(self) -> Path:
        return self.key.with_name(self.key.name + ".next")

    def load(self, node: str) -> Identity:
        cert = pki.load_cert(self.cert)
        named = pki.cert_node(cert)
        if named != node:
            raise PkiError(f"{self.cert} is for node {named!r}, but this node is {node!r}")
        return Identity(node, cert, pki.load_key(self.key), pki.load_cert(self.ca))


class RenewalAgent:
    """The node's side: asks for a new certificate in time and installs it."""

    def __init__(self, service: TunnelService, files: IdentityFiles, ca_node: str, before: dt.timedelta) -> None:
        self.service = service
        self.files = files
        self.ca_node = ca_node
        self.before = before
        service.on_message(TOPIC_ISSUED, self._on_issued)

    async def check(self, now: dt.datetime | None = None) -> bool:
        """Send a renewal request if the certificate is due; True if one was sent."""
        identity = self.service.identity
        if not pki.renewal_due(identity.cert, self.before, now):
            return False
        # A key made for an earlier, unanswered request is reused: the CA may answer that one.
        pending = pki.load_key(self.files.next_key) if self.files.next_key.exists() else None
        new_key, request = pki.make_renewal(identity.node, identity.key, identity.cert, pending)
        if pending is None:
            pki.write_private(self.files.next_key, pki.key_pem(new_key))
        serial = identity.cert.serial_number
        await self.service.send_message(
            self.ca_node, TOPIC_REQUEST, request.encode(), f"renew:{identity.node}:{serial}"
        )
        log.info(
            "certificate of %s expires %s: renewal requested from %s",
            identity.node,
            identity.cert.not_valid_after_utc,
            self.ca_node,
        )
        return True

    async def _on_issued(self, src: str, body: bytes) -> None:
        if src != self.ca_node:
            log.warning("ignoring a certificate sent by %s (our CA node is %s)", src, self.ca_node)
            return
        try:
            cert = x509.load_pem_x509_certificate(body)
            identity = self.service.identity
            pki.verify_issued_by(cert, identity.ca)
            new_key = pki.load_key(self.files.next_key)
        except (ValueError, PkiError) as exc:
            log.warning("renewed certificate rejected: %s", exc)
            return
        if cert.public_key() != new_key.public_key() or pki.cert_node(cert) != identity.node:
            log.warning("renewed certificate does not match our pending key or name; ignored")
            return
        pki.write_public(self.files.cert, pki.cert_pem(cert))
        pki.write_private(self.files.key, pki.key_pem(new_key))
        self.files.next_key.unlink(missing_ok=True)
        self.service.reload_identity(replace(identity, cert=cert, key=new_key))
        log.info("installed renewed certificate, valid until %s", cert.not_valid_after_utc)


class RenewalAuthority:
    """The CA node's side: signs renewal requests from nodes allowed to renew."""

    def __init__(
        self, service: TunnelService, ca_key: pki.PrivateKey, allowed: tuple[str, ...], days: int = 365
    ) -> None:
        self.service = service
        self.ca_key = ca_key
        self.allowed = allowed
        self.days = days
        self.issued = 0
        service.on_message(TOPIC_REQUEST, self._on_request)

    async def _on_request(self, src: str, body: bytes) -> None:
        if "*" not in self.allowed and src not in self.allowed:
            log.warning("renewal refused for %s: not on renewal_allowed", src)
            return
        ca_cert = self.service.identity.ca
        try:
            csr = pki.check_renewal(pki.RenewalRequest.decode(body), ca_cert, sender=src)
            cert = pki.issue(self.ca_key, ca_cert, csr, src, days=self.days)
        except PkiError as exc:
            log.warning("renewal refused for %s: %s", src, exc)
            return
        self.issued += 1
        await self.service.send_message(src, TOPIC_ISSUED, pki.cert_pem(cert), f"issued:{src}:{cert.serial_number}")
        log.info("renewed the certificate of %s until %s", src, cert.not_valid_after_utc)
