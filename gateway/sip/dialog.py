"""Dialog state for one side of a B2BUA call (RFC 3261 section 12), sans-I/O.

The gateway is a UA on each leg, so each leg is one dialog seen from our side:
our tag, the peer's tag, the peer's target (Contact), the route set, and the
two CSeq counters. ``make_request`` builds in-dialog requests (BYE, re-INVITE,
INFO); ``check_remote_cseq`` enforces ordering of what the peer sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.sip.errors import SipProtocolError
from gateway.sip.headers import NameAddr
from gateway.sip.message import Headers, Request
from gateway.sip.peer import Peer
from gateway.sip.randomness import token_hex
from gateway.sip.uri import Uri


def new_tag() -> str:
    return token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + token_hex(10)


def via_header(transport: str, host_port: str) -> str:
    """A fresh top Via for a request we originate (rport: answer where we sent from)."""
    return f"SIP/2.0/{transport} {host_port};branch={new_branch()};rport"


def new_call_id(host: str) -> str:
    return f"{token_hex(12)}@{host}"


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    local_uri: NameAddr  # our From (UAC) / To (UAS), without tag
    remote_uri: NameAddr  # the peer's address, without tag
    local_contact: Uri
    local_cseq: int
    # Where in-dialog requests go: the peer's Contact, and the address packets reach it at.
    remote_target: Uri
    destination: Peer
    # Our host:port on the dialog's transport, for the Via of requests we send in it.
    local_host: str
    remote_tag: str = ""
    remote_cseq: int | None = None
    route_set: tuple[str, ...] = field(default=())

    @property
    def id(self) -> tuple[str, str]:
        """What identifies this dialog in requests the peer sends: (Call-ID, our tag)."""
        return (self.call_id, self.local_tag)

    def make_request(self, method: str, extra: tuple[tuple[str, str], ...] = ()) -> Request:
        if method not in ("ACK", "CANCEL"):
            self.local_cseq += 1
        remote = self.remote_uri.with_tag(self.remote_tag) if self.remote_tag else self.remote_uri
        pairs: list[tuple[str, str]] = [
            ("Via", via_header(self.destination.transport, self.local_host)),
            ("Max-Forwards", "70"),
            ("From", str(self.local_uri.with_tag(self.local_tag))),
            ("To", str(remote)),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.local_cseq} {method}"),
        ]
        pairs += [("Route", r) for r in self.route_set]
        if method in ("INVITE", "UPDATE", "SUBSCRIBE", "REFER"):
            pairs.append(("Contact", f"<{self.local_contact}>"))
        pairs += list(extra)
        return Request(headers=Headers(tuple(pairs)), method=method, uri=self.remote_target)

    def make_ack(self, invite_cseq: int, extra: tuple[tuple[str, str], ...] = ()) -> Request:
        """The ACK for a 2xx: a new branch, the INVITE's CSeq number (RFC 3261 section 13.2.2.4)."""
        remote = self.remote_uri.with_tag(self.remote_tag)
        pairs: list[tuple[str, str]] = [
            ("Via", via_header(self.destination.transport, self.local_host)),
            ("Max-Forwards", "70"),
            ("From", str(self.local_uri.with_tag(self.local_tag))),
            ("To", str(remote)),
            ("Call-ID", self.call_id),
            ("CSeq", f"{invite_cseq} ACK"),
        ]
        pairs += [("Route", r) for r in self.route_set]
        pairs += list(extra)
        return Request(headers=Headers(tuple(pairs)), method="ACK", uri=self.remote_target)

    def check_remote_cseq(self, request: Request) -> None:
        """Refuse an in-dialog request whose CSeq goes backwards (RFC 3261 section 12.2.2)."""
        number = request.cseq.number
        if self.remote_cseq is not None and number <= self.remote_cseq and request.method != "ACK":
            raise SipProtocolError("CSeq out of order", 500)
        if request.method != "ACK":
            self.remote_cseq = number
