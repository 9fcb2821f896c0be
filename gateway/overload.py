"""Overload: refuse new calls early while the SIP socket's queue is old.

Past its capacity a SIP server does not slow down gracefully. Datagrams wait in the
socket's receive buffer (4 MiB: thousands of messages); phones retransmit whatever waited
longer than T1 (0.5 s); the retransmissions are more work; and every call in the queue is
still set up at full price, long after its caller gave up. Throughput collapses. The remedy
(RFC 6357; Asterisk's ``maxload``, Kamailio's pipelimit) is to refuse new work
early and cheaply: while the oldest datagram still waiting has waited longer than ``[sip]
overload_queue_delay_ms``, a new INVITE gets 503 with Retry-After, at a small part of a
call's cost. Calls already accepted, INVITEs already challenged and every in-dialog request
go on as before.

It is off by default: a fixed threshold refuses more calls than the excess near capacity (a
call accepted now brings its answer, ACK and BYE later, so the queue goes on growing after
the refusals start). A fraction steered by the queue's age, like RFC 7339's loss-based
scheme, was tried and, with the rates tried, refused more still.

The age is measured, not estimated: the kernel stamps each datagram on arrival
(``SO_TIMESTAMPNS``), and the transport peeks at the head of the queue (``MSG_PEEK``) when
a new INVITE comes, one system call per new call. This module reads that stamp.
"""

from __future__ import annotations

import socket
import struct

__all__ = ["RETRY_AFTER_S", "SCM_TIMESTAMPNS", "SO_TIMESTAMPNS", "arrival_of", "too_old"]

# linux/asm-generic/socket.h (x86-64, arm64): Python's socket module does not name them.
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS

# Told to a refused caller: long enough for a backlog of seconds to clear.
RETRY_AFTER_S = 5

_TIMESPEC = struct.Struct("@qq")  # struct timespec: seconds, nanoseconds (64-bit Linux)


def arrival_of(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """When the kernel received a datagram (Unix time), from ``recvmsg``'s ancillary data."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return float(seconds + nanoseconds / 1e9)
    return None


def too_old(queue_age: float, limit: float) -> bool:
    """Whether to refuse a new call; ``limit`` 0 turns shedding off."""
    return 0 < limit < queue_age
