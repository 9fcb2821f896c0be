"""Which SIP worker owns a message: read from raw bytes, before parsing (gateway/sip/shard.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sip.parser import parse_message
from gateway.sip.shard import SINGLE_PROCESS, Shard

INVITE = (
    b"INVITE sip:bob@acme SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport\r\n"
    b"From: <sip:alice@acme>;tag=a1\r\n"
    b"To: <sip:bob@acme>\r\n"
    b"Call-ID: %s\r\n"
    b"CSeq: 1 %s\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n\r\n%s"
)


def request(call_id: bytes, method: bytes = b"INVITE", body: bytes = b"") -> bytes:
    return INVITE % (call_id, method, len(body), body)


def response(call_id: bytes, method: bytes, status: bytes = b"200 OK") -> bytes:
    head = request(call_id, method).split(b"\r\n", 1)[1]
    return b"SIP/2.0 " + status + b"\r\n" + head


TWO = Shard(0, 2)


def test_one_process_owns_everything() -> None:
    assert SINGLE_PROCESS.worker_for(request(b"abc@host")) is None
    assert Shard(0, 1).worker_for(response(b"abc@host", b"INVITE")) is None


def test_a_call_belongs_to_the_worker_its_call_id_hashes_to() -> None:
    shard = Shard(1, 4)
    for call_id in (b"a@h", b"b@h", b"c@h", b"1-2345@127.0.0.1"):
        owner = shard.owner(call_id)
        for method in (b"INVITE", b"ACK", b"BYE", b"CANCEL", b"INFO", b"UPDATE", b"PRACK"):
            assert shard.worker_for(request(call_id, method)) == owner
            assert shard.worker_for(response(call_id, method)) == owner


def test_header_forms_read_like_the_parser_reads_them() -> None:
    canonical = request(b"xyz@h")
    owner = TWO.owner(b"xyz@h")
    compact = canonical.replace(b"Call-ID: xyz@h", b"i:xyz@h")
    shouting = canonical.replace(b"Call-ID: xyz@h", b"CALL-ID :   xyz@h  ").replace(b"CSeq: 1", b"cseq:   1")
    last = canonical.replace(b"Call-ID: xyz@h\r\n", b"").replace(b"\r\n\r\n", b"\r\nCall-ID: xyz@h\r\n\r\n", 1)
    for variant in (compact, shouting, last):
        assert parse_message(variant).call_id == "xyz@h"
        assert TWO.worker_for(variant) == owner


def test_call_id_is_case_sensitive() -> None:
    # RFC 3261 section 20.8: two Call-IDs differing in case are two calls.
    shard = Shard(0, 16)
    assert shard.owner(b"abcdef@host") != shard.owner(b"ABCDEF@host")


def test_presence_and_our_own_requests_belong_to_worker_zero() -> None:
    shard = Shard(1, 3)
    for method in (b"SUBSCRIBE", b"NOTIFY", b"PUBLISH", b"MESSAGE"):
        assert shard.worker_for(request(b"p@h", method)) == 0
        assert shard.worker_for(response(b"p@h", method)) == 0
    # Only worker 0 registers with trunks and probes contacts: answers to those are its own.
    assert shard.worker_for(response(b"r@h", b"REGISTER", b"401 Unauthorized")) == 0
    assert shard.worker_for(response(b"o@h", b"OPTIONS")) == 0


def test_stateless_requests_stay_where_they_landed() -> None:
    # Bindings live in the shared store, so any worker can register a phone or answer OPTIONS.
    assert TWO.worker_for(request(b"r@h", b"REGISTER")) is None
    assert TWO.worker_for(request(b"o@h", b"OPTIONS")) is None


def test_a_body_cannot_steer_a_message() -> None:
    body = b"v=0\r\nCall-ID: other@h\r\nCSeq: 1 SUBSCRIBE\r\n"
    message = request(b"mine@h", body=body)
    assert TWO.worker_for(message) == TWO.owner(b"mine@h")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"INVITE sip:bob@acme SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n",  # no Call-ID
        b"INVITE sip:bob@acme SIP/2.0\r\nCall-ID: x@h\r\n\r\n",  # no CSeq
        b"INVITE sip:bob@acme SIP/2.0\r\nCall-ID:\r\nCSeq: 1 INVITE\r\n\r\n",  # empty Call-ID
    ],
)
def test_what_cannot_be_read_is_answered_where_it_landed(data: bytes) -> None:
    # The worker that got it parses it and sends the 400 (or drops it), as one process would.
    assert TWO.worker_for(data) is None


@given(count=st.integers(1, 16), data=st.data())
def test_minted_call_ids_belong_to_their_worker(count: int, data: st.DataObject) -> None:
    shard = Shard(data.draw(st.integers(0, count - 1)), count)
    call_id = shard.new_call_id("10.0.0.1")
    assert shard.owner(call_id.encode()) == shard.index
    if count > 1:
        assert shard.worker_for(request(call_id.encode(), b"BYE")) == shard.index


def test_a_worker_index_outside_the_count_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        Shard(2, 2)
