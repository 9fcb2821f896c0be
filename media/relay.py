"""The gateway's RTP/RTCP relay: the async API the B2BUA calls.

Usage::

    config = RelayConfig(bind_host="0.0.0.0", advertised_host="203.0.113.5",
                         port_min=20000, port_max=29999, rtp_timeout_s=60)
    async with RelayManager(config, on_event=handle_relay_event) as relay:
        session = await relay.open(session_id)          # binds 2 port pairs
        offer_to_b = rewrite(sdp_a, session.leg_b)     # B sends to leg_b's ports
        await session.set_remote("a", ("192.0.2.10", 4000))  # from A's SDP (RTCP: port + 1)
        ...
        await session.set_remote("b", ("192.0.2.20", 5000), ("192.0.2.20", 5001))
        answer_to_a = rewrite(sdp_b, session.leg_a)    # A sends to leg_a's ports
        await session.arm_timeout()                     # at answer
        stats = await session.stats()                   # any time
        final = await session.close()                   # idempotent; frees the ports

Legs: ``a`` faces the caller, ``b`` the callee. ``session.leg_a`` says where the caller
must send (``advertised_host``, ``local_rtp_port``, ``local_rtcp_port``): put it in the
SDP sent *to A*; ``leg_b`` goes in the SDP sent to B. What arrives on leg a's ports is
sent, unchanged, out of leg b's ports, and back. Routing, latching and the strict source
are :mod:`media.relay_core`'s rules.

Counters (:class:`~media.relay_core.SessionStats`): per leg and per stream (RTP, RTCP),
``packets_in``/``bytes_in`` came from that leg's phone, ``packets_out``/``bytes_out`` went
to it; ``dropped`` (a source other than the latched one, among what was queued when the
leg latched: from then on its socket is connected to the latched source and the kernel
turns other sources away uncounted), ``unroutable`` (the other leg
had no address yet), ``send_errors``, ``last_packet_at`` (monotonic seconds), the
latched ``source`` and the ``sdp_address``. For a call record: the caller sent
``a.rtp.packets_in`` and received ``a.rtp.packets_out``; the callee likewise on ``b``.
``RelayManager.totals()`` sums every session so far (for /metrics).

Events: ``on_event`` (a plain function, called on the loop; it must not block) receives
:class:`~media.relay_core.LegTimedOut` (a leg sent no RTP for ``rtp_timeout_s`` after
``arm_timeout``; the B2BUA should end the call; fired once per leg per arming) and
:class:`~media.relay_core.SessionLost` (a worker process died; its sessions are gone,
their ports already released).

Processes: with ``RelayConfig.workers == 0`` (the default) the relay runs on the calling
process's event loop. With N > 0, N worker processes (:mod:`media.relay_worker`) each own
the sockets of the sessions placed on them (the least loaded at ``open``); this process
keeps the port allocator and forwards calls over a socketpair. The API is the same (every
call that changes or reads a session is a coroutine that returns once the relay has
acted, in either mode).

Resources: a session holds four UDP sockets (two even/odd port pairs from the range,
allocated first-free, released pairs reused last; a pair another program holds is
stepped over). ``start`` raises the open-file soft limit towards what a full port range
needs. A session's ``close`` releases its ports; in-process the relay keeps their sockets
bound for the next session given them (it alone uses its range: no socket calls per call
set-up, and what arrives in between is dropped), workers close theirs. ``aclose``
closes every socket.

Addresses are ``(host, port)`` tuples (IPv6: ``(host, port, flowinfo, scope_id)`` also
accepted); with an IPv6 ``bind_host`` IPv4 peers are handled as v4-mapped addresses.

Errors: :class:`~media.errors.PortsExhausted` from ``open`` when no port pair is free,
:class:`~media.errors.RelayError` for anything else (all under ``MediaError``).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from media.errors import PortsExhausted, RelayError
from media.ports import PortAllocator
from media.relay_config import RelayConfig
from media.relay_core import (
    Address,
    LegName,
    LegStats,
    LegTimedOut,
    RelayEvent,
    SessionLost,
    SessionStats,
    StreamStats,
)
from media.relay_engine import PortInUse, RelayEngine, RelayTotals

__all__ = [
    "LegPorts",
    "LegStats",
    "LegTimedOut",
    "PortsExhausted",
    "RelayConfig",
    "RelayManager",
    "RelaySession",
    "RelayTotals",
    "SessionLost",
    "SessionStats",
    "StreamStats",
]

log = logging.getLogger(__name__)

_FD_HEADROOM = 1024  # descriptors for everything else the gateway opens


def _raise_fd_limit(wanted: int) -> None:
    """Each session holds four sockets: a full port range needs more descriptors than the
    usual soft limit (1024). Raise it towards the hard limit; workers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        log.info("raised the open-file limit from %d to %d for the media relay", soft, target)


@dataclass(frozen=True)
class LegPorts:
    """Where one leg's phone must send: put these in the SDP sent to that phone."""

    advertised_host: str
    local_rtp_port: int
    local_rtcp_port: int


class _Backend(Protocol):
    async def start(self) -> None: ...
    async def open(self, session_id: str, port_a: int, port_b: int) -> None: ...
    async def set_remote(self, session_id: str, leg: LegName, rtp: Address | None, rtcp: Address | None) -> None: ...
    def set_remote_now(self, session_id: str, leg: LegName, rtp: Address | None, rtcp: Address | None) -> bool: ...
    async def arm_timeout(self, session_id: str) -> None: ...
    async def inject(self, session_id: str, leg: LegName, datagrams: list[bytes]) -> int: ...
    async def stats(self, session_id: str) -> SessionStats: ...
    async def close(self, session_id: str) -> SessionStats: ...
    async def totals(self) -> RelayTotals: ...
    async def aclose(self) -> None: ...


class _InProcess:
    """The default backend: one :class:`RelayEngine` on the running loop."""

    def __init__(self, config: RelayConfig, on_event: Callable[[RelayEvent], None]) -> None:
        self._config = config
        self._on_event = on_event
        self._engine: RelayEngine | None = None

    async def start(self) -> None:
        c = self._config
        # Sole owner of the port range here: a closed session's sockets are kept for the next,
        # within half of the open-file budget (the other half is for sessions in progress).
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        keep = 1 << 30 if soft == resource.RLIM_INFINITY else max(0, (soft - _FD_HEADROOM) // 2)
        self._engine = RelayEngine(
            c.bind_host,
            c.rtp_timeout_s,
            self._on_event,
            dscp=c.dscp,
            socket_rcvbuf=c.socket_rcvbuf,
            keep_sockets=True,
            keep_at_most=keep,
        )

    @property
    def engine(self) -> RelayEngine:
        if self._engine is None:
            raise RelayError("relay not started")
        return self._engine

    async def open(self, session_id: str, port_a: int, port_b: int) -> None:
        self.engine.open(session_id, port_a, port_b)

    async def set_remote(self, session_id: str, leg: LegName, rtp: Address | None, rtcp: Address | None) -> None:
        self.engine.set_remote(session_id, leg, rtp, rtcp)

    def set_remote_now(self, session_id: str, leg: LegName, rtp: Address | None, rtcp: Address | None) -> bool:
        self.engine.set_remote(session_id, leg, rtp, rtcp)
        return True

    async def arm_timeout(self, session_id: str) -> None:
        self.engine.arm_timeout(session_id)

    async def inject(self, session_id: str, leg: LegName, datagrams: list[bytes]) -> int:
        return self.engine.inject(session_id, leg, datagrams)

    async def stats(self, session_id: str) -> SessionStats:
        return self.engine.stats(session_id)

    async def close(self, session_id: str) -> SessionStats:
        return self.engine.close(session_id)

    async def totals(self) -> RelayTotals:
        return self.engine.totals()

    async def aclose(self) -> None:
        if self._engine is not None:
            self._engine.close_all()


def _empty_stats(session_id: str) -> SessionStats:
    none = StreamStats(0, 0, 0, 0, 0, 0, 0, None, None, None)
    leg = LegStats(none, none, None, False)
    return SessionStats(session_id, leg, leg)


class RelaySession:
    """One call's media anchor. Made by :meth:`RelayManager.open`, not directly."""

    def __init__(self, manager: RelayManager, session_id: str, port_a: int, port_b: int) -> None:
        self._manager = manager
        self.session_id = session_id
        host = manager.config.advertised_host
        self.leg_a = LegPorts(host, port_a, port_a + 1)
        self.leg_b = LegPorts(host, port_b, port_b + 1)
        self._final: asyncio.Future[SessionStats] | None = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<RelaySession {self.session_id!r} a={self.leg_a.local_rtp_port} b={self.leg_b.local_rtp_port} {state}>"

    @property
    def closed(self) -> bool:
        return self._final is not None

    def leg(self, name: LegName) -> LegPorts:
        if name not in ("a", "b"):
            raise RelayError(f"unknown leg {name!r} (expected 'a' or 'b')")
        return self.leg_a if name == "a" else self.leg_b

    def _check_open(self) -> None:
        if self._final is not None:
            raise RelayError(f"media session {self.session_id!r} is closed")

    async def set_remote(self, leg: LegName, rtp: Address | None, rtcp: Address | None = None) -> None:
        """Where ``leg``'s phone receives, from its SDP (``None`` or port 0 or 0.0.0.0: unknown / on
        hold). ``rtcp`` defaults to the RTP port + 1. A changed address re-opens latching.
        Once this returns, the relay routes with the new address."""
        self._check_remote(leg, rtp, rtcp)
        await self._manager._backend.set_remote(self.session_id, leg, rtp, rtcp)

    def set_remote_now(self, leg: LegName, rtp: Address | None, rtcp: Address | None = None) -> bool:
        """``set_remote`` done before returning, when the relay runs on this loop (no task, no
        round trip); False when it runs in worker processes: then await ``set_remote``."""
        self._check_remote(leg, rtp, rtcp)
        return self._manager._backend.set_remote_now(self.session_id, leg, rtp, rtcp)

    def _check_remote(self, leg: LegName, rtp: Address | None, rtcp: Address | None) -> None:
        self._check_open()
        self.leg(leg)
        for address in (rtp, rtcp):
            if address is not None and (len(address) not in (2, 4) or not 0 <= address[1] <= 65535):
                raise RelayError(f"bad address {address!r}")

    async def arm_timeout(self) -> None:
        """Start (or restart) both legs' RTP timeout now; call it when the call is answered."""
        self._check_open()
        await self._manager._backend.arm_timeout(self.session_id)

    async def inject(self, leg: LegName, datagrams: list[bytes]) -> int:
        """Send RTP packets of the gateway's own to ``leg``'s phone (RFC 4733 digits converted from
        a SIP INFO), from the port that phone sends to; returns how many went out."""
        self._check_open()
        return await self._manager._backend.inject(self.session_id, leg, datagrams)

    async def stats(self) -> SessionStats:
        """Current counters; after close, the final ones."""
        if self._final is not None:
            return await asyncio.shield(self._final)
        return await self._manager._backend.stats(self.session_id)

    async def close(self) -> SessionStats:
        """Stop relaying, close the sockets, release the ports; return the final counters.
        Safe to call again (or concurrently): every call returns the same counters."""
        if self._final is None:
            self._final = asyncio.get_running_loop().create_future()
            try:
                stats = await self._manager._close(self)
            except BaseException as exc:
                self._final.set_exception(exc)
                raise
            self._final.set_result(stats)
        return await asyncio.shield(self._final)

    def _lost(self) -> None:
        if self._final is None:
            self._final = asyncio.get_running_loop().create_future()
            self._final.set_result(_empty_stats(self.session_id))


class RelayManager:
    """Allocates port pairs and opens relay sessions; owns the worker processes, if any."""

    def __init__(self, config: RelayConfig, *, on_event: Callable[[RelayEvent], object] | None = None) -> None:
        self.config = config
        self._user_on_event = on_event
        self._ports = PortAllocator(config.port_min, config.port_max)
        self._sessions: dict[str, RelaySession] = {}
        self._backend: _Backend
        if config.workers:
            from media.relay_pool import WorkerPool

            self._backend = WorkerPool(config, self._on_event)
        else:
            self._backend = _InProcess(config, self._on_event)
        self._started = False
        self._start_lock = asyncio.Lock()
        self._closed = False

    async def __aenter__(self) -> RelayManager:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start the worker processes (if configured). ``open`` starts the manager if needed."""
        async with self._start_lock:
            if self._closed:
                raise RelayError("relay manager is closed")
            if not self._started:
                _raise_fd_limit(4 * self._ports.capacity + _FD_HEADROOM)
                await self._backend.start()
                self._started = True

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def worker_pids(self) -> list[int]:
        """The worker processes' ids (empty when relaying in-process)."""
        pids: list[int] = getattr(self._backend, "pids", [])
        return pids

    @property
    def ports_in_use(self) -> int:
        """Port pairs held (two per session)."""
        return self._ports.in_use

    def get(self, session_id: str) -> RelaySession | None:
        return self._sessions.get(session_id)

    async def open(self, session_id: str) -> RelaySession:
        """Bind two RTP/RTCP port pairs for a new call's media (raises PortsExhausted)."""
        await self.start()
        if session_id in self._sessions:
            raise RelayError(f"media session {session_id!r} already exists")
        held: list[int] = []
        busy: list[int] = []
        try:
            held = [self._ports.allocate(), self._ports.allocate()]
            # A pair another program holds is set aside and replaced; the allocator's
            # capacity bounds the attempts.
            while True:
                try:
                    await self._backend.open(session_id, held[0], held[1])
                    break
                except PortInUse as exc:
                    log.warning("%s; trying another", exc)
                    busy.append(exc.rtp_port)
                    held[held.index(exc.rtp_port)] = self._ports.allocate()
        except BaseException:
            for port in held:
                if port not in busy:
                    self._ports.release(port)
            raise
        finally:
            for port in busy:
                self._ports.release(port)
        session = RelaySession(self, session_id, held[0], held[1])
        self._sessions[session_id] = session
        return session

    async def _close(self, session: RelaySession) -> SessionStats:
        try:
            return await self._backend.close(session.session_id)
        finally:
            if self._sessions.pop(session.session_id, None) is not None:
                self._ports.release(session.leg_a.local_rtp_port)
                self._ports.release(session.leg_b.local_rtp_port)

    def _on_event(self, event: RelayEvent) -> None:
        if isinstance(event, SessionLost):
            session = self._sessions.pop(event.session_id, None)
            if session is None:
                return
            self._ports.release(session.leg_a.local_rtp_port)
            self._ports.release(session.leg_b.local_rtp_port)
            session._lost()
        elif event.session_id not in self._sessions:
            return
        if self._user_on_event is not None:
            try:
                self._user_on_event(event)
            except Exception:
                log.exception("relay event handler failed on %r", event)

    async def totals(self) -> RelayTotals:
        """Counters over all sessions so far (for /metrics)."""
        await self.start()
        return await self._backend.totals()

    async def aclose(self) -> None:
        """Close every session and stop the workers. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for session in list(self._sessions.values()):
            try:
                await session.close()
            except RelayError as exc:
                log.warning("closing %r: %s", session, exc)
        await self._backend.aclose()
