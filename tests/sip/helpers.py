"""Builders for SIP test messages."""

from __future__ import annotations

from gateway.sip.message import Request, Response
from gateway.sip.parser import parse_message


def request(
    method: str = "INVITE",
    branch: str = "z9hG4bKtest1",
    call_id: str = "call-1",
    cseq: int = 1,
    to_tag: str = "",
    from_tag: str = "ft",
    via_host: str = "10.0.0.1:5060",
    extra: str = "",
    body: bytes = b"",
    uri: str = "sip:bob@acme",
) -> Request:
    to = f"<sip:bob@acme>;tag={to_tag}" if to_tag else "<sip:bob@acme>"
    cseq_method = "INVITE" if method == "ACK" and not to_tag else method
    if method == "ACK":
        cseq_method = "ACK"
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via_host};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:alice@acme>;tag={from_tag}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method}\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    msg = parse_message(text.encode() + body)
    assert isinstance(msg, Request)
    return msg


def response_to(req: Request, status: int, to_tag: str = "tt", body: bytes = b"", extra: str = "") -> Response:
    to = req.headers.get("To") or ""
    if ";tag=" not in to and status > 100:
        to += f";tag={to_tag}"
    vias = "".join(f"Via: {v}\r\n" for v in req.headers.get_all("Via"))
    text = (
        f"SIP/2.0 {status} Whatever\r\n{vias}"
        f"From: {req.headers.get('From')}\r\nTo: {to}\r\nCall-ID: {req.call_id}\r\n"
        f"CSeq: {req.cseq.number} {req.cseq.method}\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    )
    msg = parse_message(text.encode() + body)
    assert isinstance(msg, Response)
    return msg
