"""UAS pre-checks (RFC 3261 section 8.2) and where refused requests are answered."""

from __future__ import annotations

from gateway.sip.headers import parse_via
from gateway.sip.message import Request
from gateway.sip.parser import parse_message
from gateway.sip.peer import Peer
from gateway.sip.transaction import RequestReceived, TransactionLayer
from gateway.sip.uas import error_reply_destination, refusal

from .helpers import request

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"


def test_unknown_method_is_501_known_one_is_left_to_the_caller() -> None:
    unknown = refusal(request("FROBNICATE"), allow=ALLOW)
    assert unknown is not None and unknown.status == 501 and unknown.headers.get("Allow") == ALLOW
    assert refusal(request("MESSAGE"), allow=ALLOW) is None


def test_require_lists_what_is_unsupported() -> None:
    req = request("OPTIONS", extra="Require: timer, 100rel\r\nProxy-Require: foo\r\n")
    refused = refusal(req, allow=ALLOW, supported=["timer"])
    assert refused is not None and refused.status == 420
    assert refused.headers.get_all("Unsupported") == ["100rel"]
    assert refusal(request("CANCEL", extra="Require: x\r\n"), allow=ALLOW) is None


def test_body_type_and_accept() -> None:
    bad_body = request("INVITE", extra="Content-Type: text/plain\r\n", body=b"hi")
    refused = refusal(bad_body, allow=ALLOW)
    assert refused is not None and refused.status == 415 and refused.headers.get("Accept") == "application/sdp"
    sdp = request("INVITE", extra="Content-Type: application/sdp\r\nAccept: application/sdp\r\n", body=b"v=0\r\n")
    assert refusal(sdp, allow=ALLOW) is None
    picky = request("INVITE", extra="Accept: text/nobodyKnowsThis\r\n")
    refused = refusal(picky, allow=ALLOW)
    assert refused is not None and refused.status == 406


def test_register_needs_a_sip_address_of_record() -> None:
    text = bytes(request("REGISTER")).replace(b"To: <sip:bob@acme>", b"To: <tel:+15551234>")
    req = parse_message(text)
    assert isinstance(req, Request)
    refused = refusal(req, allow=ALLOW)
    assert refused is not None and refused.status == 400


def test_error_answers_go_to_the_packet_source_only() -> None:
    via = parse_via("SIP/2.0/UDP 10.9.9.9:5070;received=192.0.2.66;branch=z9hG4bKx")
    assert error_reply_destination(via, Peer("127.0.0.5", 40000, "UDP")) == Peer("127.0.0.5", 5070, "UDP")
    with_rport = parse_via("SIP/2.0/UDP 10.9.9.9:5070;rport;branch=z9hG4bKx")
    assert error_reply_destination(with_rport, Peer("127.0.0.5", 40000, "UDP")).port == 40000
    tcp = Peer("127.0.0.5", 40000, "TCP")
    assert error_reply_destination(via, tcp) == tcp


def test_a_received_parameter_from_the_sender_is_not_trusted() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS", via_host="127.0.0.5:5060", branch="z9hG4bKspoof")
    spoofed = req.with_headers(
        req.headers.replaced_first("Via", "SIP/2.0/UDP 127.0.0.5:5060;received=192.0.2.66;branch=z9hG4bKspoof")
    )
    (event,) = layer.receive(spoofed, Peer("127.0.0.5", 5060, "UDP"), 0.0)
    assert isinstance(event, RequestReceived)
    assert event.request.top_via.received == "127.0.0.5"
