from __future__ import annotations

import pytest

from gateway.sip.message import make_response
from gateway.sip.parser import parse_message
from gateway.sip.peer import Peer
from gateway.sip.stream import FramingError, KeepAlivePing, StreamFramer
from gateway.sip.transaction import RequestReceived, TransactionLayer, TransactionTimedOut

from .helpers import request

TCP_PEER = Peer("10.0.0.1", 40000, "TCP")


def test_messages_split_across_and_packed_into_reads() -> None:
    one = bytes(request("OPTIONS", body=b"hello"))
    two = bytes(request("OPTIONS", branch="z9hG4bKtwo"))
    framer = StreamFramer()
    stream = b"\r\n" + one + two
    frames = []
    for i in range(0, len(stream), 7):  # seven bytes at a time
        frames += framer.feed(stream[i : i + 7])
    assert frames == [one, two]
    assert parse_message(frames[0]).body == b"hello"
    assert framer.buffered == 0


def test_crlf_ping_wants_a_pong() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r\n") == [KeepAlivePing()]


def test_stream_needs_content_length_and_respects_the_size_cap() -> None:
    no_length = b"OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n"
    with pytest.raises(FramingError) as info:
        StreamFramer().feed(no_length)
    assert info.value.status == 400
    with pytest.raises(FramingError) as info:
        StreamFramer(max_message_bytes=2048).feed(b"X" * 4096)
    assert info.value.status == 513


def test_no_retransmissions_over_reliable_transports() -> None:
    layer = TransactionLayer()
    layer.send_request(request(), TCP_PEER, now=0.0)
    layer.take_outgoing()
    # Only Timer B is armed: nothing goes out again before it fires at 64*T1.
    assert layer.next_deadline() == 32.0
    events = layer.handle_timers(32.0)
    assert layer.take_outgoing() == [] and [type(e) for e in events] == [TransactionTimedOut]


def test_server_transaction_on_tcp_answers_on_the_connection_and_finishes_at_once() -> None:
    layer = TransactionLayer()
    (event,) = layer.receive(request("REGISTER"), TCP_PEER, now=0.0)
    assert isinstance(event, RequestReceived)
    layer.respond(event.key, make_response(event.request, 200), now=0.0)
    ((_, dest),) = layer.take_outgoing()
    assert dest == TCP_PEER  # the same connection, whatever Via says
    layer.handle_timers(0.0)  # Timer J is zero on a reliable transport
    assert len(layer) == 0


def test_transport_failure_fails_its_client_transactions_now() -> None:
    layer = TransactionLayer()
    key = layer.send_request(request(), TCP_PEER, now=0.0)
    other = layer.send_request(request(branch="z9hG4bKother"), Peer("10.0.0.2", 5060, "TCP"), now=0.0)
    assert layer.transport_failed(TCP_PEER, now=1.0) == [TransactionTimedOut(key)]
    assert layer.state(key) is None and layer.state(other) is not None
