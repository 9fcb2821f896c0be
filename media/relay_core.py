"""The RTP/RTCP relay's decisions, without sockets or clocks (sans-I/O).

A media session anchors one call's media between two legs, ``a`` (the caller's
side) and ``b`` (the callee's). Each leg has two streams, RTP and RTCP, each
bound by the I/O layer to one local port. For every datagram that arrives on a
stream the I/O layer asks :meth:`Stream.received` where to send it; the answer
is an address (send it, unchanged, from the *other* leg's socket of the same
kind) or ``None`` (drop it).

Rules (symmetric RTP, RFC 4961, with latching and then a strict source):

* A stream's destination is, in order of preference, the address its peer's
  packets come from (latched), or the address the SDP gave (``set_remote``).
  With neither, packets towards it are dropped and counted as unroutable.
* The first packet received on a stream latches that stream's remote address;
  RTP and RTCP latch separately. From then on, packets from any other source
  are dropped and counted (``dropped``): a stray or hostile sender cannot
  inject media into a call or steal its return path.
* ``set_remote`` with an address different from the SDP address given before
  (a re-INVITE moved the media) releases that stream's latch, so the next
  packet latches again. The first SDP address for a stream keeps any latch
  already made (the phone may have sent before its SDP reached us).
* Payloads are never read: forwarding is codec-agnostic.

RTP timeouts: after :meth:`MediaSession.arm_timeout` (the B2BUA calls it at
answer), a leg whose RTP stream stays silent for ``rtp_timeout_s`` yields one
:class:`LegTimedOut`. :class:`RelayCore` keeps every session's deadline in one
lazy heap: the I/O layer runs a single timer at :meth:`RelayCore.get_timer` and
calls :meth:`RelayCore.handle_timer`. Packets never touch the heap: a deadline
only moves later, so a stale heap entry just fires early and is re-queued.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Literal

from media.errors import RelayError

__all__ = [
    "Address",
    "LegName",
    "LegStats",
    "LegTimedOut",
    "MediaSession",
    "RelayCore",
    "RelayEvent",
    "SessionLost",
    "SessionStats",
    "Stream",
    "StreamStats",
]

# What recvfrom gives: (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6.
Address = tuple[str, int] | tuple[str, int, int, int]
LegName = Literal["a", "b"]
LEGS: tuple[LegName, LegName] = ("a", "b")

_UNSPECIFIED_HOSTS = frozenset({"0.0.0.0", "::", ""})


@dataclass(frozen=True)
class StreamStats:
    """Counters of one leg's RTP or RTCP stream. ``in`` = received from this leg's remote,
    ``out`` = sent to it (relayed from the other leg)."""

    packets_in: int
    bytes_in: int
    packets_out: int
    bytes_out: int
    dropped: int  # from a source other than the latched one
    unroutable: int  # received while the other leg had no destination yet
    send_errors: int  # sends to this leg's remote that the kernel refused
    last_packet_at: float | None
    source: Address | None  # latched remote address
    sdp_address: Address | None


@dataclass(frozen=True)
class LegStats:
    rtp: StreamStats
    rtcp: StreamStats
    timeout_deadline: float | None
    timed_out: bool


@dataclass(frozen=True)
class SessionStats:
    session_id: str
    a: LegStats
    b: LegStats

    def leg(self, name: LegName) -> LegStats:
        return self.a if name == "a" else self.b


@dataclass(frozen=True)
class LegTimedOut:
    """A leg sent no RTP for the configured timeout after the timeout was armed."""

    session_id: str
    leg: LegName
    idle_s: float


@dataclass(frozen=True)
class SessionLost:
    """The relay lost a session it did not close (its worker process died)."""

    session_id: str
    reason: str


RelayEvent = LegTimedOut | SessionLost


def normalize_address(address: Address | None) -> Address | None:
    """An SDP address the relay can send to, or None for "unknown / on hold" (port 0, 0.0.0.0)."""
    if address is None:
        return None
    host, port = address[0], address[1]
    if host in _UNSPECIFIED_HOSTS or port == 0:
        return None
    if not 0 < port < 65536:
        raise RelayError(f"port {port} out of range")
    return address


class Stream:
    """One leg's RTP or RTCP stream: latching, strict source, counters.

    ``received`` is the relay's per-packet hot path: plain attributes, no allocation.
    """

    __slots__ = (
        "peer",
        "sdp_address",
        "source",
        "packets_in",
        "bytes_in",
        "packets_out",
        "bytes_out",
        "dropped",
        "unroutable",
        "send_errors",
        "last_packet_at",
    )

    def __init__(self) -> None:
        self.peer: Stream = self
        self.sdp_address: Address | None = None
        self.source: Address | None = None
        self.packets_in = 0
        self.bytes_in = 0
        self.packets_out = 0
        self.bytes_out = 0
        self.dropped = 0
        self.unroutable = 0
        self.send_errors = 0
        self.last_packet_at: float | None = None

    def received(self, source: Address, size: int, now: float) -> Address | None:
        """A datagram of ``size`` bytes came from ``source``: where to send it, or None to drop it."""
        latched = self.source
        if latched != source:
            if latched is not None:
                self.dropped += 1
                return None
            self.source = source
        self.packets_in += 1
        self.bytes_in += size
        self.last_packet_at = now
        peer = self.peer
        destination = peer.source or peer.sdp_address
        if destination is None:
            self.unroutable += 1
            return None
        peer.packets_out += 1
        peer.bytes_out += size
        return destination

    def passed(self, size: int, now: float) -> None:
        """``received`` for a datagram the I/O layer knows came from the latched source and
        left for the peer's latched source (both sockets connected): the counters only."""
        self.packets_in += 1
        self.bytes_in += size
        self.last_packet_at = now
        peer = self.peer
        peer.packets_out += 1
        peer.bytes_out += size

    def destination(self) -> Address | None:
        """Where packets for this stream's far end go: its latched source, else its SDP address."""
        return self.source or self.sdp_address

    def injected(self, size: int) -> None:
        """The relay sent a packet of its own (e.g. RFC 4733 digits from a SIP INFO) to this stream."""
        self.packets_out += 1
        self.bytes_out += size

    def send_failed(self, size: int) -> None:
        """The I/O layer could not send a datagram that ``received`` routed to this stream."""
        self.packets_out -= 1
        self.bytes_out -= size
        self.send_errors += 1

    def set_sdp_address(self, address: Address | None) -> None:
        if self.sdp_address is not None and address != self.sdp_address:
            self.source = None
        self.sdp_address = address

    def stats(self) -> StreamStats:
        return StreamStats(
            packets_in=self.packets_in,
            bytes_in=self.bytes_in,
            packets_out=self.packets_out,
            bytes_out=self.bytes_out,
            dropped=self.dropped,
            unroutable=self.unroutable,
            send_errors=self.send_errors,
            last_packet_at=self.last_packet_at,
            source=self.source,
            sdp_address=self.sdp_address,
        )


class _Leg:
    __slots__ = ("name", "rtp", "rtcp", "armed_at", "timed_out")

    def __init__(self, name: LegName) -> None:
        self.name: LegName = name
        self.rtp = Stream()
        self.rtcp = Stream()
        self.armed_at: float | None = None
        self.timed_out = False

    def deadline(self, timeout: float) -> float | None:
        if self.armed_at is None or self.timed_out:
            return None
        last = self.rtp.last_packet_at
        start = self.armed_at if last is None or last < self.armed_at else last
        return start + timeout

    def stats(self, timeout: float) -> LegStats:
        return LegStats(self.rtp.stats(), self.rtcp.stats(), self.deadline(timeout), self.timed_out)


class MediaSession:
    """One call's two legs. The I/O layer feeds each socket's datagrams to ``stream(leg, kind)``."""

    def __init__(self, session_id: str, rtp_timeout_s: float) -> None:
        if rtp_timeout_s <= 0:
            raise RelayError("rtp_timeout_s must be positive")
        self.session_id = session_id
        self.rtp_timeout_s = rtp_timeout_s
        self._a = _Leg("a")
        self._b = _Leg("b")
        self._a.rtp.peer, self._b.rtp.peer = self._b.rtp, self._a.rtp
        self._a.rtcp.peer, self._b.rtcp.peer = self._b.rtcp, self._a.rtcp

    def _leg(self, name: str) -> _Leg:
        if name == "a":
            return self._a
        if name == "b":
            return self._b
        raise RelayError(f"unknown leg {name!r} (expected 'a' or 'b')")

    def stream(self, leg: LegName, kind: Literal["rtp", "rtcp"]) -> Stream:
        one = self._leg(leg)
        return one.rtp if kind == "rtp" else one.rtcp

    def set_remote(self, leg: LegName, rtp: Address | None, rtcp: Address | None = None) -> None:
        """Where the SDP says ``leg``'s phone receives; RTCP defaults to the RTP port + 1 (RFC 3550)."""
        one = self._leg(leg)
        rtp = normalize_address(rtp)
        if rtcp is None and rtp is not None:
            rtcp = (rtp[0], rtp[1] + 1) if len(rtp) == 2 else (rtp[0], rtp[1] + 1, rtp[2], rtp[3])
            if rtcp[1] > 65535:
                rtcp = None
        one.rtp.set_sdp_address(rtp)
        one.rtcp.set_sdp_address(normalize_address(rtcp))

    def arm_timeout(self, now: float) -> None:
        """Start (or restart) the RTP timeout of both legs from ``now``."""
        for leg in (self._a, self._b):
            leg.armed_at = now
            leg.timed_out = False

    def deadline(self) -> float | None:
        both = (self._a.deadline(self.rtp_timeout_s), self._b.deadline(self.rtp_timeout_s))
        deadlines = [d for d in both if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> list[LegTimedOut]:
        events = []
        for leg in (self._a, self._b):
            deadline = leg.deadline(self.rtp_timeout_s)
            if deadline is not None and deadline <= now:
                leg.timed_out = True
                idle = now - deadline + self.rtp_timeout_s
                events.append(LegTimedOut(self.session_id, leg.name, idle))
        return events

    def stats(self) -> SessionStats:
        timeout = self.rtp_timeout_s
        return SessionStats(self.session_id, self._a.stats(timeout), self._b.stats(timeout))

    def unpair(self) -> None:
        """The session is over: its streams no longer name each other. Paired, each two
        streams are a reference cycle, which only the garbage collector would free, calls
        later and at a cost; unpaired, they go the moment the last reference does."""
        for leg in (self._a, self._b):
            del leg.rtp.peer, leg.rtcp.peer


class RelayCore:
    """Every media session of one relay, and the one timer that serves their RTP timeouts."""

    def __init__(self, rtp_timeout_s: float) -> None:
        self.rtp_timeout_s = rtp_timeout_s
        self._sessions: dict[str, MediaSession] = {}
        self._heap: list[tuple[float, str]] = []
        self._queued: set[str] = set()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def add(self, session_id: str) -> MediaSession:
        if session_id in self._sessions:
            raise RelayError(f"media session {session_id!r} already exists")
        session = MediaSession(session_id, self.rtp_timeout_s)
        self._sessions[session_id] = session
        return session

    def get(self, session_id: str) -> MediaSession:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise RelayError(f"no media session {session_id!r}") from None

    def remove(self, session_id: str) -> SessionStats:
        """Forget a session (its heap entry, if any, is dropped when it comes up)."""
        session = self.get(session_id)
        del self._sessions[session_id]
        stats = session.stats()
        session.unpair()
        return stats

    def arm_timeout(self, session_id: str, now: float) -> None:
        session = self.get(session_id)
        session.arm_timeout(now)
        self._queue(session)

    def _queue(self, session: MediaSession) -> None:
        deadline = session.deadline()
        if deadline is not None and session.session_id not in self._queued:
            self._queued.add(session.session_id)
            heapq.heappush(self._heap, (deadline, session.session_id))

    def get_timer(self) -> float | None:
        """When ``handle_timer`` should next run (it may find nothing due yet), or None."""
        return self._heap[0][0] if self._heap else None

    def handle_timer(self, now: float) -> list[RelayEvent]:
        events: list[RelayEvent] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, session_id = heapq.heappop(heap)
            self._queued.discard(session_id)
            session = self._sessions.get(session_id)
            if session is None:
                continue
            events.extend(session.handle_timer(now))
            self._queue(session)
        return events
