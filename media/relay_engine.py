"""The relay's socket layer for one event loop: binds each session's four UDP sockets,
feeds their datagrams to the sans-I/O core, sends what it routes, runs its one timer.

It is used as is by the in-process relay and by each worker process. Its methods
are synchronous (nothing here waits); :mod:`media.relay` puts the async API on top.

Receive path, per readable socket: ``recvfrom_into`` a buffer preallocated once per
engine (the loop runs one callback at a time, so one buffer serves every socket),
ask the core's :meth:`~media.relay_core.Stream.received` where to send, and send a
memoryview slice of the same buffer from the other leg's socket; repeat until the
socket would block. Nothing is allocated per packet beyond what ``recvfrom_into``
itself returns.

With ``keep_sockets`` (the in-process relay, sole owner of its port range) a closed
session's sockets stay bound, their reader swapped for one that drops what still
arrives, and the next session given one of those ports takes the socket over: per call
set-up that saves creating, marking and binding four sockets and closing them again.
Taking a socket over first drops whatever it queued meanwhile. ``close_all`` closes them.

Once a leg's stream has latched, its socket is connected to that source: the kernel then
delivers nothing else to it (strict source, enforced below us), and once both legs of a
stream pair are connected their readers switch to ``recv_into`` and ``send``, which build
and parse no address per packet (about a fifth of a packet's relay cost). What was queued
before the connect is still read with the source checked. A changed SDP address (a
re-INVITE) disconnects the socket so that the new source can latch; so does the end of a
session whose sockets are kept.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from media.errors import RelayError
from media.relay_core import Address, LegName, RelayCore, RelayEvent, SessionStats, Stream

__all__ = ["PortInUse", "RelayEngine", "RelayTotals"]

log = logging.getLogger(__name__)

_RECV_BUFFER = 65536  # the largest UDP payload

_libc = ctypes.CDLL(None, use_errno=True)
# A sockaddr whose family is AF_UNSPEC (0): connect() to it dissolves a UDP socket's
# association (Python's socket.connect cannot express it). Sized for sockaddr_in6.
_UNSPECIFIED = ctypes.create_string_buffer(28)


def _disconnect(sock: socket.socket) -> None:
    if _libc.connect(sock.fileno(), _UNSPECIFIED, ctypes.sizeof(_UNSPECIFIED)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


# A wire's connection to its phone.
_UNCONNECTED, _CONNECTED, _NOT_CONNECTABLE = 0, 1, 2


class _Wire:
    """One socket of a session: the stream its datagrams feed, the socket they leave by (its
    partner's), and whether it is connected to its latched source."""

    __slots__ = ("sock", "stream", "out", "partner", "state")

    def __init__(self, sock: socket.socket, stream: Stream, out: socket.socket) -> None:
        self.sock = sock
        self.stream = stream
        self.out = out
        self.partner: _Wire = self
        self.state = _UNCONNECTED


class PortInUse(RelayError):
    """Binding one of a session's ports failed because something else holds it."""

    def __init__(self, rtp_port: int) -> None:
        super().__init__(f"RTP/RTCP port pair {rtp_port}/{rtp_port + 1} is in use by another program")
        self.rtp_port = rtp_port


@dataclass(frozen=True)
class RelayTotals:
    """Cumulative counters over every session this relay has had (closed ones included)."""

    sessions: int
    packets_relayed: int
    bytes_relayed: int
    packets_dropped: int
    packets_unroutable: int

    def __add__(self, other: RelayTotals) -> RelayTotals:
        return RelayTotals(
            self.sessions + other.sessions,
            self.packets_relayed + other.packets_relayed,
            self.bytes_relayed + other.bytes_relayed,
            self.packets_dropped + other.packets_dropped,
            self.packets_unroutable + other.packets_unroutable,
        )


_NO_TOTALS = RelayTotals(0, 0, 0, 0, 0)


def _totals_of(stats: SessionStats) -> RelayTotals:
    streams = (stats.a.rtp, stats.a.rtcp, stats.b.rtp, stats.b.rtcp)
    return RelayTotals(
        0,
        sum(s.packets_out for s in streams),
        sum(s.bytes_out for s in streams),
        sum(s.dropped for s in streams),
        sum(s.unroutable for s in streams),
    )


class RelayEngine:
    def __init__(
        self,
        bind_host: str,
        rtp_timeout_s: float,
        on_event: Callable[[RelayEvent], object],
        *,
        dscp: int = 46,
        socket_rcvbuf: int = 0,
        loop: asyncio.AbstractEventLoop | None = None,
        keep_sockets: bool = False,
        keep_at_most: int = 1 << 30,
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._bind_host = bind_host
        self._family = socket.AF_INET6 if ipaddress.ip_address(bind_host).version == 6 else socket.AF_INET
        self._dscp = dscp
        self._rcvbuf = socket_rcvbuf
        self._on_event = on_event
        self._core = RelayCore(rtp_timeout_s)
        self._buffer = bytearray(_RECV_BUFFER)
        self._view = memoryview(self._buffer)
        # Each session's four sockets, in the order (a rtp, a rtcp, b rtp, b rtcp).
        self._wires: dict[str, tuple[_Wire, ...]] = {}
        self._ports: dict[str, tuple[int, ...]] = {}
        # Bound sockets of closed sessions, by port, while keep_sockets: taken over by the
        # next session that gets the port; what they receive meanwhile is dropped.
        self._keep = keep_sockets
        self._keep_at_most = keep_at_most  # the open-file budget left over by active sessions
        self._kept: dict[int, socket.socket] = {}
        self._stray = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed_totals = _NO_TOTALS

    def __len__(self) -> int:
        return len(self._wires)

    # --- sessions ---------------------------------------------------------------------

    def open(self, session_id: str, port_a: int, port_b: int) -> None:
        """Bind leg a's RTP/RTCP on ``port_a``/``port_a + 1`` and leg b's on ``port_b``/``port_b + 1``."""
        if session_id in self._core:
            raise RelayError(f"media session {session_id!r} already exists")
        ports = (port_a, port_a + 1, port_b, port_b + 1)
        socks: list[socket.socket] = []
        try:
            for port in ports:
                kept = self._kept.pop(port, None)
                if kept is not None:
                    self._drop_queued(kept)
                    socks.append(kept)
                else:
                    socks.append(self._bind(port, port - port % 2))
        except BaseException:
            for port, sock in zip(ports, socks, strict=False):
                self._release(port, sock)
            raise
        a_rtp, a_rtcp, b_rtp, b_rtcp = socks
        session = self._core.add(session_id)
        self._ports[session_id] = ports
        wiring: tuple[tuple[socket.socket, LegName, Literal["rtp", "rtcp"], socket.socket], ...] = (
            (a_rtp, "a", "rtp", b_rtp),
            (a_rtcp, "a", "rtcp", b_rtcp),
            (b_rtp, "b", "rtp", a_rtp),
            (b_rtcp, "b", "rtcp", a_rtcp),
        )
        wires = tuple(_Wire(sock, session.stream(leg, kind), out) for sock, leg, kind, out in wiring)
        wires[0].partner, wires[2].partner = wires[2], wires[0]
        wires[1].partner, wires[3].partner = wires[3], wires[1]
        self._wires[session_id] = wires
        for wire in wires:
            self._watch(wire.sock, self._reader(wire))

    def _bind(self, port: int, rtp_port: int) -> socket.socket:
        # Non-blocking from the start (no ioctl after): four of these per call set-up.
        sock = socket.socket(self._family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        try:
            if self._dscp:
                if self._family == socket.AF_INET:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, self._dscp << 2)
                else:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, self._dscp << 2)
            if self._rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
            sock.bind((self._bind_host, port))
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortInUse(rtp_port) from None
            raise
        return sock

    def _watch(self, sock: socket.socket, callback: Callable[..., None], *args: object) -> None:
        """Read ``sock`` with ``callback`` from now on, replacing its reader.

        Under uvloop a reader can be dead: libuv reports a socket error (POLLERR) as a failed
        poll, and uvloop then closes the socket's poll handle but keeps it, so adding a reader
        raises RuntimeError until the dead handle is removed (see :meth:`_revive`)."""
        fd = sock.fileno()
        try:
            self._loop.add_reader(fd, callback, *args)
        except RuntimeError:
            self._loop.remove_reader(fd)
            self._loop.add_reader(fd, callback, *args)

    def _revive(self, wire: _Wire) -> None:
        """A send from ``wire``'s socket failed: give the socket a fresh reader.

        A connected socket whose phone's port is gone gets an ICMP port unreachable; the
        kernel flags it as an error on the socket, which the next send reports (the failure
        that brings us here). Under uvloop the flag has usually been seen first and has
        silenced the socket's reader for good, so without this the phone, once back (a
        restarted softphone, a NAT binding renewed), would never be heard again. With
        asyncio's own loop the reader is alive and this only replaces it."""
        both_connected = wire.state == _CONNECTED and wire.partner.state == _CONNECTED
        self._watch(wire.sock, self._fast_reader(wire) if both_connected else self._reader(wire))

    def _drop_queued(self, sock: socket.socket) -> None:
        """Read and drop what a kept socket received since its session closed."""
        recv_into = sock.recv_into
        buffer = self._buffer
        while True:
            try:
                recv_into(buffer)
            except BlockingIOError:
                return
            except OSError:
                continue  # a queued ICMP error: consumed by this read
            self._stray += 1

    def _release(self, port: int, sock: socket.socket, keep: bool = True) -> None:
        """Done with ``sock``: kept for the next session given ``port`` (its reader replaced by
        one that drops what arrives) while the budget allows, else closed."""
        if keep and self._keep and len(self._kept) < self._keep_at_most:
            self._kept[port] = sock
            self._watch(sock, self._drop_queued, sock)
        else:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    def _reader(self, wire: _Wire) -> Callable[[], None]:
        """Until the wire and its partner are connected: each datagram's source checked."""
        # Everything the hot loop touches is bound to a local once, here.
        recvfrom_into = wire.sock.recvfrom_into
        sendto = wire.out.sendto
        stream = wire.stream
        received = stream.received
        peer = stream.peer
        buffer = self._buffer
        view = self._view
        clock = self._loop.time
        connect = self._connect
        revive = self._revive
        partner = wire.partner

        def on_readable() -> None:
            # Drain until EAGAIN. Reading one datagram per wake-up would save the failed
            # read on a sparse voice socket, but after a stall (the process was descheduled)
            # every socket holds a backlog, each loop iteration gets longer, and a
            # one-per-wake-up reader can fall behind for good: latency grows to seconds.
            now = clock()
            while True:
                try:
                    size, source = recvfrom_into(buffer)
                except BlockingIOError:
                    return
                except OSError as exc:
                    # A queued ICMP error (e.g. port unreachable) is consumed by this call;
                    # if more is readable the loop calls again (level-triggered).
                    log.debug("relay socket error: %s", exc)
                    return
                destination = received(source, size, now)
                if destination is not None:
                    try:
                        sendto(view[:size], destination)
                    except OSError:
                        peer.send_failed(size)
                        revive(partner)
                if wire.state == _UNCONNECTED and stream.source is not None:
                    connect(wire)  # just latched; this loop still drains what came before

        return on_readable

    def _fast_reader(self, wire: _Wire) -> Callable[[], None]:
        """Both ends connected: only the latched source reaches the socket, and the partner
        sends to its own latched phone, so no address is made or parsed per packet."""
        recv_into = wire.sock.recv_into
        send = wire.out.send
        passed = wire.stream.passed
        peer = wire.stream.peer
        buffer = self._buffer
        view = self._view
        clock = self._loop.time
        revive = self._revive
        partner = wire.partner

        def on_readable() -> None:
            now = clock()
            while True:
                try:
                    size = recv_into(buffer)
                except BlockingIOError:
                    return
                except OSError as exc:  # an ICMP error for an earlier send, reported here
                    log.debug("relay socket error: %s", exc)
                    return
                passed(size, now)
                try:
                    send(view[:size])
                except OSError:
                    peer.send_failed(size)
                    revive(partner)

        return on_readable

    def _connect(self, wire: _Wire) -> None:
        source = wire.stream.source
        assert source is not None
        try:
            wire.sock.connect(source)
        except OSError as exc:
            log.debug("relay socket stays unconnected: %s", exc)
            wire.state = _NOT_CONNECTABLE  # the source-checking reader serves it
            return
        wire.state = _CONNECTED
        if wire.partner.state == _CONNECTED:
            for one in (wire, wire.partner):
                self._watch(one.sock, self._fast_reader(one))

    def _unconnect(self, wire: _Wire) -> None:
        """The stream latches afresh (a new SDP address): any source may reach it again."""
        if wire.state == _CONNECTED:
            try:
                _disconnect(wire.sock)
            except OSError as exc:
                log.warning("relay socket could not be disconnected: %s", exc)
            if wire.partner.state == _CONNECTED:  # both were on the fast path
                self._watch(wire.partner.sock, self._reader(wire.partner))
            self._watch(wire.sock, self._reader(wire))
        wire.state = _UNCONNECTED

    def set_remote(self, session_id: str, leg: LegName, rtp: Address | None, rtcp: Address | None) -> None:
        self._core.get(session_id).set_remote(leg, self._native(rtp), self._native(rtcp))
        for wire in self._wires[session_id]:
            if wire.state != _UNCONNECTED and wire.stream.source is None:
                self._unconnect(wire)

    def _native(self, address: Address | None) -> Address | None:
        """The address as recvfrom on our sockets reports it, so latching compares equal:
        an IPv6 socket sees IPv4 peers as v4-mapped 4-tuples."""
        if address is None or self._family != socket.AF_INET6:
            return address
        host = address[0]
        if ":" not in host:
            host = f"::ffff:{host}"
        return (host, address[1], 0, 0) if len(address) == 2 else (host, *address[1:])

    def inject(self, session_id: str, leg: LegName, datagrams: list[bytes]) -> int:
        """Send packets of our own to ``leg``'s phone from its RTP port; returns how many went out."""
        wires = self._wires.get(session_id)
        if wires is None:
            raise RelayError(f"no media session {session_id!r}")
        wire = wires[0] if leg == "a" else wires[2]
        sock = wire.sock
        stream = self._core.get(session_id).stream(leg, "rtp")
        destination = stream.destination()
        if destination is None:
            return 0
        sent = 0
        for datagram in datagrams:
            try:
                sock.sendto(datagram, destination)
            except OSError:
                stream.send_errors += 1
                self._revive(wire)
                continue
            stream.injected(len(datagram))
            sent += 1
        return sent

    def arm_timeout(self, session_id: str) -> None:
        self._core.arm_timeout(session_id, self._loop.time())
        self._reschedule()

    def stats(self, session_id: str) -> SessionStats:
        return self._core.get(session_id).stats()

    def close(self, session_id: str) -> SessionStats:
        """Stop relaying, close the session's sockets, return its final counters."""
        wires = self._wires.pop(session_id, None)
        if wires is None:
            raise RelayError(f"no media session {session_id!r}")
        for port, wire in zip(self._ports.pop(session_id), wires, strict=True):
            keep = True
            if wire.state == _CONNECTED and self._keep:
                try:
                    _disconnect(wire.sock)  # kept for another call: any source may reach it
                except OSError:
                    keep = False
            self._release(port, wire.sock, keep)
        for wire in wires:
            del wire.partner  # partners are a reference cycle: undone, the wires go at once
        stats = self._core.remove(session_id)
        self._closed_totals += _totals_of(stats) + RelayTotals(1, 0, 0, 0, 0)
        return stats

    def close_all(self) -> None:
        for session_id in list(self._wires):
            self.close(session_id)
        kept, self._kept = self._kept, {}
        for sock in kept.values():
            self._loop.remove_reader(sock.fileno())
            sock.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None

    def totals(self) -> RelayTotals:
        live = _NO_TOTALS
        for session_id in self._wires:
            live += _totals_of(self._core.get(session_id).stats())
        return self._closed_totals + live + RelayTotals(len(self._wires), 0, 0, 0, self._stray)

    # --- the one timer ---------------------------------------------------------------

    def _reschedule(self) -> None:
        due = self._core.get_timer()
        if due == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = due
        self._timer = None if due is None else self._loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        # The loop may run a timer up to its clock resolution early; it is due all the same.
        now = max(self._loop.time(), self._timer_at or 0.0)
        self._timer = self._timer_at = None
        for event in self._core.handle_timer(now):
            try:
                self._on_event(event)
            except Exception:
                log.exception("relay event handler failed on %r", event)
        self._reschedule()
