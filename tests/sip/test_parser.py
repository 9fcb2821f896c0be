from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sip.message import Headers, Request, Response, make_response
from gateway.sip.parser import Limits, SipParseError, can_answer, parse_message

FIXTURES = Path(__file__).parent.parent / "fixtures" / "sip"

INVITE = (
    b"INVITE sip:bob@acme SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport, SIP/2.0/UDP 10.0.0.2\r\n"
    b'f: "Alice" <sip:alice@acme>;tag=1\r\n'
    b"t: sip:bob@acme\r\n"
    b"i: abc\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Subject: hello\r\n  world\r\n"
    b"Max-Forwards: 70\r\n"
    b"m: <sip:alice@10.0.0.1>, <sip:alice@10.0.0.9>;expires=5\r\n"
    b"c: application/sdp\r\n"
    b"l: 4\r\n\r\nbodyEXTRA"
)


def test_compact_forms_folding_and_lists() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE" and str(msg.uri) == "sip:bob@acme"
    assert [v.host for v in msg.vias] == ["10.0.0.1", "10.0.0.2"]
    assert msg.from_.display == '"Alice"' and msg.from_.tag == "1"
    assert msg.call_id == "abc"
    assert msg.headers.get("Subject") == "hello world"
    assert [str(c.uri) for c in msg.contacts] == ["sip:alice@10.0.0.1", "sip:alice@10.0.0.9"]
    assert msg.contacts[1].param("expires") == "5"
    assert msg.content_type == "application/sdp"
    assert msg.body == b"body"  # Content-Length wins over trailing bytes


def test_round_trip_is_stable() -> None:
    first = parse_message(INVITE)
    again = parse_message(bytes(first))
    assert again == first


def test_real_baresip_register() -> None:
    msg = parse_message((FIXTURES / "baresip_register.bin").read_bytes())
    assert isinstance(msg, Request) and msg.method == "REGISTER"
    assert msg.to.uri.user == "alice" and msg.to.uri.host == "acme"
    assert msg.contacts[0].param("expires") == "600"
    assert msg.top_via.rport == ""


def test_response() -> None:
    msg = parse_message(
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n"
        b"To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 5 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(msg, Response) and msg.status == 180 and msg.reason == "Ringing"
    assert msg.to.tag == "2"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (INVITE.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 505),
        (INVITE.replace(b"sip:bob@acme SIP", b"http://bob SIP"), 416),
        (INVITE.replace(b"l: 4", b"l: 400"), 400),
        (INVITE.replace(b"l: 4", b"l: four"), 400),
        (INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), 400),
        (INVITE.replace(b"i: abc\r\n", b""), 400),
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: lots"), 400),
        (INVITE.replace(b'f: "Alice" <sip:alice@acme>;tag=1', b"f: <sip:alice@acme"), 400),
    ],
)
def test_malformed_requests_name_a_status(data: bytes, status: int) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status == status
    assert info.value.is_request


def test_error_response_can_be_built_from_partial_headers() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(INVITE.replace(b"l: 4", b"l: 400"))
    assert can_answer(info.value.partial)


def test_size_cap() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(INVITE + b"x" * 2000, Limits(max_message_bytes=1024))
    assert info.value.status == 513


def test_make_response_copies_dialog_headers_and_adds_tag() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, Request)
    resp = make_response(req, 486, to_tag="xyz")
    assert resp.status == 486 and resp.reason == "Busy Here"
    assert resp.to.tag == "xyz" and resp.call_id == "abc" and len(resp.vias) == 2
    parsed = parse_message(bytes(resp))
    assert isinstance(parsed, Response) and parsed.status == 486


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_only_ever_raise_parse_errors(data: bytes) -> None:
    try:
        parse_message(data)
    except SipParseError:
        pass


_lines = st.sampled_from(
    [
        b"Via: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKa",
        b"v: SIP/2.0/UDP [::1]:5060;rport",
        b"From: <sip:a@b>;tag=1",
        b"f: x",
        b"To: sip:c@d",
        b"Call-ID: 1",
        b"CSeq: 1 INVITE",
        b"CSeq: 99999999999 INVITE",
        b"Contact: *",
        b'Contact: "a, b" <sip:x@y>, <sip:z@w;lr>',
        b"Content-Length: 0",
        b"l: 99",
        b"Max-Forwards: 0",
        b" folded",
        b"Bad Header",
        b"\xff\xfe",
        b"Expires: 3600",
    ]
)


@settings(max_examples=3000, deadline=None)
@given(
    st.sampled_from([b"INVITE sip:b@c SIP/2.0", b"SIP/2.0 200 OK", b"REGISTER sips:[::1] SIP/2.0", b"X y z"]),
    st.lists(_lines, max_size=12),
    st.binary(max_size=64),
)
def test_structured_garbage_parses_or_raises_cleanly(start: bytes, lines: list[bytes], body: bytes) -> None:
    data = b"\r\n".join([start, *lines]) + b"\r\n\r\n" + body
    try:
        msg = parse_message(data)
    except SipParseError as exc:
        assert 400 <= exc.status < 600
        return
    # Whatever parsed must serialise and parse back to the same message (we always write
    # Content-Length, which a datagram may omit).
    again = parse_message(bytes(msg))
    assert again.headers.without("Content-Length") == msg.headers.without("Content-Length")
    assert again.body == msg.body and type(again) is type(msg)


def test_header_lookups_by_any_name_form_read_the_parsed_values_in_order() -> None:
    raw = (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/UDP b.example.com;branch=z9hG4bK2\r\n"
        b"Via: SIP/2.0/UDP c.example.com;branch=z9hG4bK3\r\n"
        b"Max-Forwards: 70\r\nf: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n"
        b"i: abc@h\r\nCSeq: 1 INVITE\r\nX-Custom: one\r\nX-Custom: two\r\nContent-Length: 0\r\n\r\n"
    )
    parsed = parse_message(raw)
    built = Headers(parsed.headers.items)  # the same headers, not from the parser: index built on first use
    for headers in (parsed.headers, built):
        vias = ["SIP/2.0/UDP a.example.com;branch=z9hG4bK1", "SIP/2.0/UDP b.example.com;branch=z9hG4bK2",
                "SIP/2.0/UDP c.example.com;branch=z9hG4bK3"]  # fmt: skip
        assert headers.get_all("Via") == headers.get_all("v") == headers.get_all("VIA") == vias
        assert headers.get("via") == vias[0] and headers.get("Call-ID") == headers.get("i") == "abc@h"
        assert headers.get_all("X-Custom") == ["one", "two"] and headers.get("X-Custom") == "one"
        assert headers.get("Contact") is None and headers.get_all("Contact") == [] and "Route" not in headers
        headers.get_all("Via").append("changed")  # a copy: the message is not changed
        assert headers.get_all("Via") == vias
    assert parsed.headers == built
