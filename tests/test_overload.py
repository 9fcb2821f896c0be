"""Overload shedding: the kernel's arrival stamp read from ancillary data, the decision,
and the age of a real socket's queue."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

from gateway.overload import SCM_TIMESTAMPNS, arrival_of, too_old
from gateway.transport_udp import open_udp


def test_the_arrival_stamp_is_read_from_its_control_message() -> None:
    stamp = struct.pack("@qq", 1_795_000_000, 250_000_000)
    assert arrival_of([(socket.SOL_SOCKET, SCM_TIMESTAMPNS, stamp)]) == 1_795_000_000.25
    # Other control messages are passed over; a short one is not a stamp.
    other = (socket.IPPROTO_IP, socket.IP_TOS, b"\x00")
    assert arrival_of([other, (socket.SOL_SOCKET, SCM_TIMESTAMPNS, stamp)]) == 1_795_000_000.25
    assert arrival_of([(socket.SOL_SOCKET, SCM_TIMESTAMPNS, stamp[:8])]) is None
    assert arrival_of([]) is None


def test_a_call_is_refused_only_past_a_set_limit() -> None:
    assert not too_old(0.0, 0.3)
    assert not too_old(0.3, 0.3)
    assert too_old(0.31, 0.3)
    assert not too_old(60.0, 0.0)  # 0: shedding off


async def test_the_age_of_the_oldest_queued_datagram_is_measured_on_a_real_socket() -> None:
    received: list[bytes] = []
    transport = await open_udp("127.0.0.1", 0, lambda data, _source: received.append(data), stamp_arrivals=True)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert transport.queue_age() == 0.0  # nothing queued
        # The kernel turns arrival stamps on a moment after the first socket asks for them:
        # send until one datagram is stamped on arrival rather than when first read.
        for attempt in range(50):
            sent_at = time.time()
            sender.sendto(b"first %d" % attempt, transport.local_address)
            time.sleep(0.05)  # noqa: ASYNC251 (a busy event loop: nothing reads the socket meanwhile)
            sender.sendto(b"second %d" % attempt, transport.local_address)
            age = transport.queue_age()
            waited = time.time() - sent_at
            if age >= 0.05:
                break
            await asyncio.sleep(0.01)  # the loop reads both
        assert 0.05 <= age <= waited
        # Peeking takes nothing: the loop still reads both datagrams, in order.
        for _ in range(200):
            if received[-2:] == [b"first %d" % attempt, b"second %d" % attempt]:
                break
            await asyncio.sleep(0.01)
        assert received[-2:] == [b"first %d" % attempt, b"second %d" % attempt]
        assert transport.queue_age() == 0.0
    finally:
        sender.close()
        transport.close()


async def test_without_stamps_the_queue_never_reads_as_old() -> None:
    transport = await open_udp("127.0.0.1", 0, lambda data, _source: None)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.sendto(b"waiting", transport.local_address)
        time.sleep(0.05)  # noqa: ASYNC251 (a busy event loop: nothing reads the socket meanwhile)
        assert transport.queue_age() == 0.0  # shedding off: no stamps asked for, none read
    finally:
        sender.close()
        transport.close()
