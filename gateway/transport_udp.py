"""The SIP UDP transport: hands datagrams to the SIP service and sends what it returns."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import cast

from gateway.errors import StartupError
from gateway.overload import SO_TIMESTAMPNS, arrival_of

Addr = tuple[str, int]

# A burst of calls (a site's link coming back, a hub's morning) must queue, not be dropped at
# the socket: a lost INVITE or ACK costs a retransmission 0.5 s later, then more load. The
# kernel caps this at net.core.rmem_max.
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024

_ANCILLARY_BYTES = socket.CMSG_SPACE(16)  # one struct timespec


class UdpTransport(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Addr], None]) -> None:
        # The loop calls this for every datagram: the consumer itself, not a method that
        # passes it on (one Python call less per message). The loop's address is already a
        # (host, port) tuple (IPv6 adds flow and scope, which consumers ignore).
        self.datagram_received = on_datagram  # type: ignore[method-assign,assignment]
        self._transport: asyncio.DatagramTransport | None = None
        # The same socket as a plain one, to peek at its queue (the loop's wrapper cannot).
        self._peek: socket.socket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport, but behaves as one.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a phone that went away: the transaction's timers handle it.
        pass

    def send(self, data: bytes, addr: Addr) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._peek is not None:
            self._peek.close()
            self._peek = None

    def stamp_arrivals(self, sock: socket.socket) -> None:
        """Have the kernel stamp each datagram's arrival, so that ``queue_age`` can be read."""
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            return  # not Linux: no stamps, so the queue never reads as old
        self._peek = socket.socket(fileno=os.dup(sock.fileno()))

    def queue_age(self) -> float:
        """How long (seconds) the oldest datagram still queued has waited; 0 if none waits."""
        if self._peek is None:
            return 0.0
        try:
            _data, ancillary, _flags, _source = self._peek.recvmsg(
                1, _ANCILLARY_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT
            )
        except OSError:
            return 0.0  # nothing queued (or a queued ICMP error, which this read consumed)
        arrived = arrival_of(ancillary)
        # The kernel stamps on the system's real-time clock: so must the reading be, whatever
        # clock the gateway's cores are given.
        return max(0.0, time.time() - arrived) if arrived is not None else 0.0

    @property
    def local_address(self) -> Addr:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)


async def open_udp(
    host: str,
    port: int,
    on_datagram: Callable[[bytes, Addr], None],
    reuse_port: bool = False,
    stamp_arrivals: bool = False,
) -> UdpTransport:
    """``reuse_port``: several SIP workers share the port; the kernel spreads datagrams by source.
    ``stamp_arrivals``: make ``queue_age`` readable (the kernel then stamps every datagram)."""
    loop = asyncio.get_running_loop()
    try:
        _transport, protocol = await loop.create_datagram_endpoint(
            lambda: UdpTransport(on_datagram), local_addr=(host, port), reuse_port=reuse_port or None
        )
    except OSError as exc:
        raise StartupError(f"cannot listen for SIP on udp {host}:{port}: {exc.strerror or exc}") from None
    sock = _transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        if stamp_arrivals:
            protocol.stamp_arrivals(sock)
    return protocol
