"""The checks every UAS makes before acting on a request (RFC 3261 section 8.2), sans-I/O.

Method inspection (501 for methods nobody defined, as opposed to 405 for those we do
not allow), Require (420), body type (415), Accept (406), and the SIP/SIPS
address-of-record a REGISTER must carry (400). RFC 4475 section 3.3 exercises each.
Also where to send the answer to a request that did not even parse.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from gateway.sip.headers import Via, split_commas
from gateway.sip.message import Request, Response, make_response
from gateway.sip.peer import Peer
from gateway.sip.sdp import sdp_of

# Methods defined by RFC 3261 and its extensions: refusing one of these is 405, any
# other method is unknown (501).
KNOWN_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "CANCEL",
        "BYE",
        "OPTIONS",
        "REGISTER",
        "INFO",
        "UPDATE",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "REFER",
        "MESSAGE",
        "PUBLISH",
    }
)
# Methods whose body we read as a session description.
_SDP_METHODS = frozenset({"INVITE", "UPDATE", "PRACK"})
_SDP = "application/sdp"


def refusal(
    request: Request,
    *,
    allow: str,
    supported: Iterable[str] = (),
    to_tag: str | None = None,
) -> Response | None:
    """The response that refuses ``request`` before any processing, or None to go on."""
    if request.method not in KNOWN_METHODS:
        return make_response(request, 501, to_tag=to_tag, extra=[("Allow", allow)])
    if request.method in ("ACK", "CANCEL"):
        return None  # RFC 3261 section 8.2.2.3: never refused for Require
    unsupported = _unsupported(request, {s.lower() for s in supported})
    if unsupported:
        return make_response(request, 420, to_tag=to_tag, extra=[("Unsupported", ", ".join(unsupported))])
    if request.method in _SDP_METHODS and request.body and not _is_sdp(request):
        extra = [("Accept", _SDP), ("Accept-Encoding", "identity")]
        return make_response(request, 415, to_tag=to_tag, extra=extra)
    if request.method == "INVITE" and not _accepts_sdp(request):
        extra = [("Accept", _SDP), ("Warning", '399 - "responses are only formulated in application/sdp"')]
        return make_response(request, 406, to_tag=to_tag, extra=extra)
    if request.method == "REGISTER" and not request.to.uri.is_sip:
        # RFC 3261 section 10.3: the address-of-record is a SIP or SIPS URI (RFC 4475 3.3.4).
        return make_response(request, 400, "Bad Request (To is not a SIP URI)", to_tag=to_tag)
    return None


def _unsupported(request: Request, supported: set[str]) -> list[str]:
    wanted: list[str] = []
    for value in request.headers.get_all("Require"):
        wanted.extend(item.strip() for item in split_commas(value))
    return [option for option in wanted if option and option.lower() not in supported]


def _is_sdp(request: Request) -> bool:
    encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
    has_sdp = sdp_of(request.headers.get("Content-Type") or "", request.body) is not None
    return has_sdp and encoding == "identity"


def _accepts_sdp(request: Request) -> bool:
    accepts = request.headers.get_all("Accept")
    if not accepts:
        return True  # no Accept header means application/sdp (RFC 3261 section 20.1)
    ranges = {a.split(";")[0].strip().lower() for a in accepts}
    return bool(ranges & {_SDP, "application/*", "*/*"})


def error_reply_destination(top: Via, source: Peer) -> Peer:
    """Where the answer to an unparseable request goes.

    Like RFC 3261 section 18.2.2, but the host is always the packet's source: a
    "received" parameter in a message we could not even parse is the sender's word,
    and trusting it would make us a reflector towards any address.
    """
    if source.reliable:
        return source
    port = source.port if top.rport is not None else (top.port or 5060)
    return Peer(source.host, port, "UDP")


def stable_tag(request: Request) -> str:
    """The To tag of a response we make ourselves: the same for a retransmitted request,
    so a retransmitted final response looks the same."""
    return hashlib.sha256(f"{request.call_id}|{request.cseq.number}".encode()).hexdigest()[:12]
