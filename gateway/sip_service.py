"""The SIP service: feeds datagrams to the transaction core and acts on what comes out.

This is the one place where SIP meets I/O: the UDP transport, the one timer,
the stores (users, locations, call records) and the media relay. Protocol
decisions are made by the cores (parser, transactions, registrar, Call); this
module routes events between them and carries out their actions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import ipaddress
import itertools
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from billing.live.controller import LiveBilling
from gateway.b2bua import (
    Action,
    Call,
    CallAnswered,
    CallEnded,
    CallSettings,
    DtmfToSend,
    ForkTarget,
    MediaRemoteChanged,
    Party,
    SendAck,
    SendRequest,
    SendResponse,
    StreamPorts,
    new_session_id,
    parse_session_id,
)
from gateway.call_billing import CallBilling
from gateway.cdr import CallRecord, Category
from gateway.cdr_store import CdrStore
from gateway.clock import Clock, WallAnchor
from gateway.config import DialRule
from gateway.contact_keepalive import ContactKeepalive
from gateway.location import LocationStore
from gateway.media_port import Addr, Leg, MediaAllocator, MediaStats, MediaStream
from gateway.metrics import SipMetrics
from gateway.overload import RETRY_AFTER_S, too_old
from gateway.routing import route_number
from gateway.sip.digest import AuthAccepted, DigestAuthenticator
from gateway.sip.errors import SipError, TransactionError
from gateway.sip.message import Request, Response, make_response, response_from_headers
from gateway.sip.parser import Limits, SipParseError, parse_message
from gateway.sip.peer import Peer
from gateway.sip.registrar import (
    RegistrarPolicy,
    challenge_response,
    credentials_of,
    process_register,
)
from gateway.sip.sdp import SdpError, parse_sdp, sdp_of
from gateway.sip.shard import Shard
from gateway.sip.transaction import (
    AckReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    TimerConfig,
    TransactionLayer,
    TransactionTimedOut,
    TxKey,
    response_destination,
    stamped,
)
from gateway.sip.uas import error_reply_destination, refusal, stable_tag
from gateway.sip.uri import parse_uri
from gateway.sip_worker_link import WorkerLink
from gateway.subscriptions import DialogNotifier, Notify
from gateway.transport_stream import StreamTransport
from gateway.transport_udp import UdpTransport, open_udp
from gateway.trunks import TrunkManager
from gateway.users import User, UserStore
from gateway.webrtc.category import call_category
from media.dtmf import DtmfSender

log = logging.getLogger("seabridge.sip")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REGISTER, SUBSCRIBE, NOTIFY"


@dataclass(frozen=True)
class SipSettings:
    node: str
    bind: str
    port: int  # UDP
    advertised_address: str
    media_address: str
    timers: TimerConfig
    policy: RegistrarPolicy
    limits: Limits
    ring_timeout: float
    rtp_timeout: float
    user_agent: str
    tenant_for_domain: Callable[[str], str]
    tcp_port: int | None = None  # None: no TCP listener
    tls_port: int | None = None  # None: no TLS listener
    server_ssl: ssl.SSLContext | None = None
    client_ssl: ssl.SSLContext | None = None
    stream_idle_timeout: float = 600.0
    # How often calls in progress are checkpointed (what a crash loses at most).
    checkpoint_interval: float = 15.0
    # A call still ringing this long after its INVITE is checkpointed (an answer is checkpointed
    # within checkpoint_batch_delay).
    first_checkpoint_delay: float = 1.0
    # Checkpoints wanted within this long of each other are written together, in one
    # transaction: under load, one commit for many answers instead of one each.
    checkpoint_batch_delay: float = 0.1
    # OPTIONS to registered contacts this often (0: never).
    keepalive_interval: float = 0.0
    # The tenant's dial plan (numbers that leave through trunks).
    dial_plan: Callable[[str], tuple[DialRule, ...]] = lambda tenant: ()
    # Longest a call may last, by tenant (None: no limit).
    max_call_duration: Callable[[str], float | None] = lambda tenant: None
    # This process's place among several SIP workers ([sip] workers), and the run they share.
    shard: Shard = Shard()
    worker_run: str = ""
    # TCP/TLS ports worker 0 listens on, advertised by the other workers (which have none).
    stream_ports: tuple[tuple[str, int], ...] = ()
    # Close calls a crash left open at start (only the first worker: the others' calls are live).
    recover: bool = True
    # New INVITEs are refused while the SIP socket's oldest queued datagram is older (0: never).
    overload_queue_delay: float = 0.0


@dataclass
class _Pending:
    """An INVITE whose set-up (auth, lookups, media) is still awaiting I/O."""

    cancelled: bool = False


class SipService:
    def __init__(
        self,
        settings: SipSettings,
        users: UserStore,
        locations: LocationStore,
        cdrs: CdrStore,
        media: MediaAllocator,
        auth: DigestAuthenticator,
        metrics: SipMetrics,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self._users = users
        self._locations = locations
        self._cdrs = cdrs
        self._media = media
        self._auth = auth
        self._metrics = metrics
        self._clock = clock
        self._txn = TransactionLayer(settings.timers)
        # Read at scrape time: setting them on every event cost a lock each, many times a call.
        metrics.calls_in_progress.set_function(lambda: len(self._calls))
        metrics.transactions.set_function(lambda: len(self._txn))
        self._transport: UdpTransport | None = None
        self._stream_transports: dict[str, StreamTransport] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending: dict[TxKey, _Pending] = {}
        self._calls: set[Call] = set()
        self._by_key: dict[TxKey, Call] = {}
        self._by_dialog: dict[tuple[str, str], Call] = {}
        self._media_streams: dict[Call, list[MediaStream]] = {}
        self._anchors: dict[Call, WallAnchor] = {}
        self._ending: set[Call] = set()
        self._by_stream: dict[str, Call] = {}
        self._dtmf_senders: dict[tuple[Call, str], DtmfSender] = {}
        self._accepting = True
        self._own: dict[TxKey, asyncio.Future[Response | None]] = {}
        self.trunks: TrunkManager | None = None
        self.notifier: DialogNotifier | None = None
        self.billing: LiveBilling | None = None
        self._call_billing: CallBilling | None = None
        self._billing_watch: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()  # set while no call is in progress
        self._idle.set()
        self._checkpointer: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self.call_listeners: list[Callable[[CallRecord], Awaitable[None]]] = []
        # The browser phone's SIP agent: calls from or to it are categorised for billing.
        self._webrtc_agent: Peer | None = None
        self._media_kinds: dict[Call, tuple[str, ...]] = {}
        self._accepted: dict[Call, tuple[bool, ...]] = {}
        # Per-event work must not grow with the calls in progress: calls' deadlines sit in a
        # heap (stale entries skipped lazily) and only calls acted on are checked for reaping.
        self._deadlines: list[tuple[float, int, Call]] = []
        self._deadline_of: dict[Call, float] = {}
        self._heap_seq = itertools.count()
        self._reapable: set[Call] = set()
        self._ringing_checkpoints: dict[Call, asyncio.TimerHandle] = {}
        self._checkpoints_wanted: dict[Call, None] = {}  # in order; written by _write_wanted_checkpoints
        self._checkpoint_batch: asyncio.TimerHandle | None = None
        self._keys_of: dict[Call, list[TxKey]] = {}
        self._dialogs_of: dict[Call, set[tuple[str, str]]] = {}
        self._message_counts = metrics.messages
        self._link: WorkerLink | None = None
        # Whether each message in and out is logged: read once at start (the level is set
        # before, and never changes), not with a logging call for each of them.
        self._log_messages = False

    # --- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.settings
        self._log_messages = log.isEnabledFor(logging.DEBUG)
        sharded = cfg.shard.count > 1
        self._transport = await open_udp(
            cfg.bind, cfg.port, self.datagram_received, reuse_port=sharded, stamp_arrivals=cfg.overload_queue_delay > 0
        )
        if sharded:
            self._link = WorkerLink(cfg.worker_run, cfg.shard.index, self._received, self._send_for_worker)
            await self._link.start()
        listeners = {"udp": f"{cfg.bind}:{self.local_port}"}
        for name, port, server_ssl in (("TCP", cfg.tcp_port, None), ("TLS", cfg.tls_port, cfg.server_ssl)):
            if port is None:
                continue
            stream = StreamTransport(
                name,
                self._stream_message,
                self._transport_failed,
                server_ssl=server_ssl,
                client_ssl=cfg.client_ssl,
                idle_timeout=cfg.stream_idle_timeout,
                max_message_bytes=cfg.limits.max_message_bytes,
            )
            await stream.listen(cfg.bind, port)
            self._stream_transports[name] = stream
            listeners[name.lower()] = f"{cfg.bind}:{stream.local_port}"
        self._media.on_timeout(self._media_stopped)
        log.info("sip listening", extra=listeners)
        for record in await self._cdrs.recover() if cfg.recover else ():
            log.warning(
                "closed a call left open by a crash at its last checkpoint",
                extra={"session": record.session_id, "end": record.end.isoformat()},
            )
            for listener in self.call_listeners:
                await listener(record)
        self._checkpointer = asyncio.create_task(self._checkpoint_loop())
        if self.billing is not None:
            self._call_billing = CallBilling(self.billing, self._clock, self._is_ingress, self._end_by_billing)
            self._billing_watch = asyncio.create_task(self._call_billing.watch())
        if cfg.keepalive_interval > 0:
            keepalive = ContactKeepalive(
                self._locations,
                cfg.keepalive_interval,
                self.request,
                lambda binding: self._destination_for(binding.contact, binding.source),
                self.host_for,
                cfg.user_agent,
                self._clock.monotonic,
            )
            self._keepalive = asyncio.create_task(keepalive.run(self._spawn))

    @property
    def local_port(self) -> int:
        assert self._transport is not None
        return self._transport.local_address[1]

    def port_of(self, transport: str) -> int:
        if transport == "UDP":
            return self.local_port
        if transport in self._stream_transports:
            return self._stream_transports[transport].local_port
        return dict(self.settings.stream_ports)[transport]

    @property
    def transports(self) -> list[str]:
        return ["UDP", *self._stream_transports, *(t for t, _ in self.settings.stream_ports)]

    def host_for(self, transport: str) -> str:
        host = self.settings.advertised_address
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port_of(transport)}"

    @property
    def open_connections(self) -> int:
        return sum(t.connection_count for t in self._stream_transports.values())

    async def drain(self, grace: float) -> None:
        """Graceful shutdown: refuse new calls, end those in progress on both legs, write their records."""
        self._accepting = False
        now = self._clock.monotonic()
        for call in list(self._calls):
            self._act(call, call.hangup("system", now, status=503), now)
        self._after(now)
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            log.warning("calls still open after the shutdown grace period", extra={"calls": len(self._calls)})
        # Let the final BYEs and responses leave before the sockets close.
        self._flush()

    async def stop(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
        if self._billing_watch is not None:
            self._billing_watch.cancel()
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self._timer is not None:
            self._timer.cancel()
        for handle in self._ringing_checkpoints.values():
            handle.cancel()
        self._ringing_checkpoints.clear()
        if self._checkpoint_batch is not None:
            self._checkpoint_batch.cancel()
        self._checkpoints_wanted.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for call in list(self._calls):
            await self._close_media(call)
        for stream in self._stream_transports.values():
            await stream.close()
        if self._transport is not None:
            self._transport.close()
        if self._link is not None:
            await self._link.close()

    def session_ids(self) -> set[str]:
        """Every call this process still carries, to its record's last write."""
        return {call.session_id for call in self._calls}

    async def recover_dead_worker_calls(self, others: Callable[[], Awaitable[set[str]]]) -> None:
        """A SIP worker died: close its calls at their last checkpoint, as a restart would.

        Its calls are those with a checkpoint that no process still carries (``others``: the
        other live workers' Session-IDs, asked for after the checkpoints were read)."""

        async def live() -> set[str]:
            return self.session_ids() | await others()

        if self.billing is not None:
            await self.billing.recover(live)
        for record in await self._cdrs.recover(live):
            log.warning(
                "closed a call of a sip worker that died, at its last checkpoint",
                extra={"session": record.session_id, "end": record.end.isoformat()},
            )
            for listener in self.call_listeners:
                await listener(record)

    def calls_snapshot(self, tenant: str | None = None) -> list[dict[str, object]]:
        """Calls in progress, for the API (a tenant sees only calls its users make or take)."""
        now = self._clock.monotonic()
        out: list[dict[str, object]] = []
        for call in self._calls:
            if call.phase.value == "ended":
                continue
            if tenant is not None and tenant not in (call.caller.tenant, call.callee.tenant):
                continue
            anchor = self._anchors.get(call)
            out.append(
                {
                    "session_id": call.session_id,
                    "tenant": call.caller.tenant,
                    "caller": call.caller.address,
                    "callee": call.callee.address,
                    "state": call.phase.value,
                    "start": anchor.utc(call.started).isoformat() if anchor else None,
                    "answered": anchor.utc(call.answered_at).isoformat() if anchor and call.answered_at else None,
                    "duration_s": round(now - call.answered_at, 1) if call.answered_at is not None else 0,
                    "codec": call.codec,
                }
            )
        return sorted(out, key=lambda c: str(c["start"]))

    async def registrations(self, tenant: str | None = None) -> list[dict[str, object]]:
        now = self._clock.monotonic()
        out: list[dict[str, object]] = []
        for aor, bindings in sorted((await self._locations.list_all(now, tenant)).items()):
            for b in bindings:
                out.append({"aor": aor, "contact": b.contact, "source": str(b.source), "expires_in": b.remaining(now)})
        return out

    def set_webrtc_agent(self, address: tuple[str, int]) -> None:
        """Where the browser phone's internal SIP agent sends from (its calls are "bridged")."""
        self._webrtc_agent = Peer(address[0], address[1], "UDP")

    @property
    def calls_in_progress(self) -> int:
        return len(self._calls)

    @property
    def transactions(self) -> int:
        return len(self._txn)

    # --- input ---------------------------------------------------------------------------

    def datagram_received(self, data: bytes, source: tuple[str, int]) -> None:
        if len(data) < 16 and not data.strip():
            return  # CRLF keep-alive (RFC 5626 section 4.4.1); a SIP message is longer
        peer = Peer(source[0], source[1], "UDP")
        if self._link is not None and self._pass_on(data, peer):
            return
        self._received(data, peer)

    def _stream_message(self, data: bytes, source: Peer) -> None:
        if self._link is not None and self._pass_on(data, source):
            return
        self._received(data, source)

    def _pass_on(self, data: bytes, source: Peer) -> bool:
        """Hand a message owned by another SIP worker to it; False if it is ours."""
        assert self._link is not None
        owner = self.settings.shard.worker_for(data)
        if owner is None or owner == self.settings.shard.index:
            return False
        if data.startswith(b"INVITE ") and self._overloaded() and self._refuse_here(data, source):
            return True
        self._link.forward(owner, data, source)
        return True

    def _refuse_here(self, data: bytes, source: Peer) -> bool:
        """Refuse a new call another worker owns (503, stateless) while this worker's queue is
        old: it waited in our queue, which the owner cannot see. False: pass it on after all."""
        try:
            request = parse_message(data, self.settings.limits)
        except SipParseError:
            return False  # the owner answers what is wrong with it
        if not isinstance(request, Request) or not _unchallenged_invite(request):
            return False
        request = stamped(request, source)
        self._metrics.overload_refusals.inc()
        self._txn.send_stateless(_overload_refusal(request), response_destination(request.top_via, source))
        self._flush()
        return True

    def _send_for_worker(self, data: bytes, destination: Peer) -> None:
        """Another worker's message for a TCP/TLS peer, sent over the connection we hold.

        The worker named the phone's flow; if that connection is gone, a request goes where
        its Request-URI (the binding's Contact) says, as _destination_for would have chosen."""
        stream = self._stream_transports.get(destination.transport)
        if stream is not None and not stream.has_connection(destination) and not data.startswith(b"SIP/"):
            request_uri = data.split(b" ", 2)[1].decode(errors="replace") if data.count(b" ") >= 2 else ""
            destination = _peer_of_contact(request_uri, destination.transport) or destination
        self._send_stream(data, destination)

    def _send_stream(self, data: bytes, destination: Peer) -> None:
        """Another worker's message for a TCP/TLS peer: only this worker holds the connections."""
        stream = self._stream_transports.get(destination.transport)
        if stream is None:
            log.warning("no transport for destination", extra={"peer": str(destination)})
            return
        stream.send(data, destination)

    def _transport_failed(self, peer: Peer) -> None:
        now = self._clock.monotonic()
        self._handle(self._txn.transport_failed(peer, now), now)

    def _received(self, data: bytes, source: Peer) -> None:
        if self._log_messages:
            log.debug(
                "sip in", extra={"peer": str(source), "first_line": data.split(b"\r\n", 1)[0].decode(errors="replace")}
            )
        now = self._clock.monotonic()
        self._message_counts.received += 1
        try:
            message = parse_message(data, self.settings.limits)
        except SipParseError as exc:
            self._metrics.parse_errors.inc()
            log.info("unparseable sip", extra={"source": str(source), "error": str(exc)})
            if exc.reply_via is not None and exc.partial is not None:
                response = response_from_headers(exc.partial, exc.status, _reason(exc))
                self._txn.send_stateless(response, error_reply_destination(exc.reply_via, source))
                self._flush()
            return
        try:
            events = self._txn.receive(message, source, now)
        except SipError as exc:
            self._metrics.parse_errors.inc()
            log.info("unusable sip", extra={"source": str(source), "error": str(exc)})
            return
        self._handle(events, now)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self._clock.monotonic()
        events = self._txn.handle_timers(now)
        self._handle(events, now)
        due: list[Call] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            when, _, call = heapq.heappop(self._deadlines)
            if self._deadline_of.get(call) == when:
                del self._deadline_of[call]
                due.append(call)
        for call in due:
            deadline = call.next_deadline()
            if call in self._calls and deadline is not None and deadline <= now:
                self._act(call, call.on_timer(now), now)
            else:
                self._track(call)
        self._after(now)

    def _handle(self, events: list[Event], now: float) -> None:
        for event in events:
            try:
                self._dispatch(event, now)
            except SipError as exc:
                log.warning("sip error", extra={"error": str(exc)})
        self._after(now)

    def _after(self, now: float) -> None:
        # Runs after every message and timer (about fourteen times per call): skip what has
        # nothing to do without a call.
        if self._reapable:
            self._reap()
        if self._txn.outgoing:
            self._flush()
        self._rearm(now)

    def _dispatch(self, event: Event, now: float) -> None:
        if isinstance(event, RequestReceived):
            self._on_request(event, now)
        elif isinstance(event, ResponseReceived) and event.key in self._own:
            if event.response.status >= 200 and not self._own[event.key].done():
                self._own[event.key].set_result(event.response)
        elif isinstance(event, ResponseReceived):
            call = self._by_key.get(event.key)
            if call is not None:
                self._act(call, call.on_response(event.key, event.response, now), now)
        elif isinstance(event, AckReceived):
            request = event.request
            call = self._by_dialog.get((request.call_id, request.to.tag or ""))
            if call is not None:
                leg = call.leg_of(request.call_id, request.to.tag or "")
                if leg is not None:
                    self._act(call, call.on_ack(leg, now), now)
        elif isinstance(event, TransactionTimedOut) and event.key in self._own:
            if not self._own[event.key].done():
                self._own[event.key].set_result(None)
        elif isinstance(event, TransactionTimedOut):
            call = self._by_key.get(event.key)
            if call is not None:
                self._act(call, call.on_timeout(event.key, now), now)

    def _on_request(self, event: RequestReceived, now: float) -> None:
        request = event.request
        method = request.method
        to_tag = request.to.tag
        refused = refusal(request, allow=ALLOW, to_tag=to_tag or stable_tag(request))
        if refused is not None:
            self._respond(event.key, refused, now)
        elif method == "CANCEL":
            self._on_cancel(event, now)
        elif method == "SUBSCRIBE" and to_tag and self.notifier is not None:
            sub = self.notifier.find(request.call_id, to_tag)
            if sub is None:
                self._respond(event.key, make_response(request, 481), now)
            else:
                response, notify = self.notifier.refresh(sub, request, now)
                self._respond(event.key, response, now)
                self._spawn(self._send_notify(notify))
        elif method == "SUBSCRIBE" and not to_tag:
            self._spawn(self._subscribe(event))
        elif to_tag:
            call = self._by_dialog.get((request.call_id, to_tag))
            leg = call.leg_of(request.call_id, to_tag) if call is not None else None
            if call is None or leg is None:
                self._respond(event.key, make_response(request, 481), now)
            else:
                self._act(call, call.on_request(leg, event.key, request, now), now)
        elif method == "REGISTER":
            self._spawn(self._register(event))
        elif method == "INVITE" and not self._accepting:
            extra = [("Retry-After", "30")]
            self._respond(
                event.key,
                make_response(
                    request, 503, "Service Unavailable (shutting down)", to_tag=stable_tag(request), extra=extra
                ),
                now,
            )
        elif _unchallenged_invite(request) and self._overloaded():
            self._metrics.overload_refusals.inc()
            self._respond(event.key, _overload_refusal(request), now)
        elif method == "INVITE":
            challenge = self._challenge_at_once(event, now)
            if challenge is not None:
                self._respond(event.key, challenge, now)
            else:
                self._pending[event.key] = _Pending()
                self._spawn(self._invite(event))
        elif method == "OPTIONS":
            extra = [("Allow", ALLOW), ("Accept", "application/sdp"), ("Server", self.settings.user_agent)]
            self._respond(event.key, make_response(request, 200, to_tag=stable_tag(request), extra=extra), now)
        elif method in ("BYE", "INFO", "UPDATE", "PRACK"):
            self._respond(event.key, make_response(request, 481, to_tag=stable_tag(request)), now)
        else:
            self._respond(
                event.key, make_response(request, 405, to_tag=stable_tag(request), extra=[("Allow", ALLOW)]), now
            )

    def _overloaded(self) -> bool:
        """Whether the datagrams still queued behind this INVITE have waited too long (with the
        option off the transport reads no stamps, and its queue never reads as old)."""
        transport = self._transport
        return transport is not None and too_old(transport.queue_age(), self.settings.overload_queue_delay)

    def _on_cancel(self, event: RequestReceived, now: float) -> None:
        request = event.request
        target = event.cancels
        call = self._by_key.get(target) if target is not None else None
        pending = self._pending.get(target) if target is not None else None
        if call is None and pending is None:
            self._respond(event.key, make_response(request, 481), now)
            return
        self._respond(event.key, make_response(request, 200), now)
        if pending is not None:
            pending.cancelled = True
        if call is not None:
            self._act(call, call.on_cancel(now), now)

    # --- REGISTER ------------------------------------------------------------------------

    async def _register(self, event: RequestReceived) -> None:
        request = event.request
        domain = request.to.uri.host
        tenant = self.settings.tenant_for_domain(domain)
        username = request.to.uri.user or ""
        # A REGISTER without credentials is only challenged (the same challenge whether the
        # user exists or not): neither the user nor the bindings need reading for it.
        answering = credentials_of(request) is not None
        user = await self._users.get(tenant, username) if username and answering else None
        now = self._clock.monotonic()
        aor = f"{username}@{tenant}"
        current = await self._locations.get(aor, now) if user is not None else ()
        now = self._clock.monotonic()
        ha1s = {"MD5": user.ha1_md5, "SHA-256": user.ha1_sha256} if user is not None else None
        outcome = process_register(
            request,
            event.source,
            tenant,
            ha1s,
            current,
            self._auth,
            self.settings.policy,
            now,
            self._clock.wall(),
        )
        if outcome.response.status in (401, 403) and credentials_of(request) is not None:
            self._metrics.auth_failures.labels("REGISTER").inc()
            log.info("register refused", extra={"aor": aor, "source": str(event.source)})
        if outcome.bindings is not None:
            await self._locations.put(aor, outcome.bindings, now)
            log.info("registered", extra={"aor": aor, "contacts": len(outcome.bindings)})
        now = self._clock.monotonic()
        self._respond(event.key, outcome.response, now)
        self._after(now)

    # --- SUBSCRIBE (dialog state of HQ extensions) --------------------------------------

    async def _subscribe(self, event: RequestReceived) -> None:
        request = event.request
        now = self._clock.monotonic()
        if self.notifier is None or (request.headers.get("Event") or "").split(";")[0].strip() != "dialog":
            extra = [("Allow-Events", "dialog")] if self.notifier is not None else []
            self._respond(event.key, make_response(request, 489, to_tag=stable_tag(request), extra=extra), now)
            self._after(now)
            return
        outcome = await self._authenticate(request, now)
        now = self._clock.monotonic()
        if isinstance(outcome, Response):
            self._respond(event.key, outcome, now)
            self._after(now)
            return
        exten = request.uri.user or ""
        route = route_number(self.settings.dial_plan(outcome.tenant), exten)
        if route is not None:
            exten = route.number  # subscribed by the number the user dials (with the trunk prefix)
        entity = f"sip:{exten}@{outcome.tenant}"
        response, notify = self.notifier.subscribe(
            request, event.source, exten, entity, self.host_for(event.source.transport), now
        )
        self._respond(event.key, response, now)
        self._after(now)
        if notify is not None:
            await self._send_notify(notify)

    async def _send_notify(self, notify: Notify) -> None:
        response = await self.request(notify.request, notify.destination)
        if self.notifier is not None and (response is None or response.status == 481):
            self.notifier.drop(notify.subscription)

    def presence_changed(self, exten: str) -> None:
        """An HQ extension changed state: tell its subscribers."""
        if self.notifier is None:
            return
        for notify in self.notifier.changed(exten, self._clock.monotonic()):
            self._spawn(self._send_notify(notify))

    # --- INVITE --------------------------------------------------------------------------

    async def _invite(self, event: RequestReceived) -> None:
        key = event.key
        try:
            response_or_call = await self._set_up(event)
        finally:
            pending = self._pending.pop(key, None)
        now = self._clock.monotonic()
        if isinstance(response_or_call, Response):
            if pending is not None and pending.cancelled:
                response_or_call = make_response(event.request, 487, to_tag=stable_tag(event.request))
            self._respond(key, response_or_call, now)
            self._after(now)
            return
        call, targets, streams, kinds = response_or_call
        self._calls.add(call)
        self._idle.clear()
        self._media_kinds[call] = kinds
        self._by_key[key] = call
        self._keys_of[call] = [key]
        self._media_streams[call] = streams
        for stream in streams:
            self._by_stream[stream.stream_id] = call
        self._anchors[call] = WallAnchor(call.started, self._clock.wall() - (now - call.started))
        # Most calls are answered or refused within a second, and an answer writes its own
        # checkpoint: only a call still ringing then costs a write for its crash record.
        self._ringing_checkpoints[call] = asyncio.get_running_loop().call_later(
            self.settings.first_checkpoint_delay, self._want_checkpoint, call
        )
        actions = call.start(targets, [StreamPorts(s.a_port, s.b_port) for s in streams], now)
        if pending is not None and pending.cancelled:
            actions += call.on_cancel(now)
        self._act(call, actions, now)
        self._after(now)

    def _challenge_at_once(self, event: RequestReceived, now: float) -> Response | None:
        """The 407 for an INVITE that brings no credentials, answered before anything is sent:
        no task, and the transaction's 100 Trying, still queued, is not sent at all."""
        request = event.request
        if request.headers.get("Max-Forwards") == "0" or "Proxy-Authorization" in request.headers:
            return None  # _set_up answers these
        if self.trunks is not None and self.trunks.identify(event.source) is not None:
            return None  # trunks are trusted by address
        tenant = self.settings.tenant_for_domain(request.from_.uri.host)
        return challenge_response(request, self._auth, tenant, now, proxy=True)

    async def _set_up(
        self, event: RequestReceived
    ) -> Response | tuple[Call, list[ForkTarget], list[MediaStream], tuple[str, ...]]:
        request = event.request
        started = self._clock.monotonic()
        if request.headers.get("Max-Forwards") == "0":
            return make_response(request, 483, to_tag=stable_tag(request))
        display = request.from_.display.strip('"')
        trunk_in = self.trunks.identify(event.source) if self.trunks is not None else None
        if trunk_in is not None:
            # IP-identified peering: the PBX does not authenticate; its calls reach local users only.
            number = request.from_.uri.user or trunk_in.name
            caller = Party(
                number, trunk_in.tenant, trunk_in.billing_site, display, trunk_in.billing_account, trunk=trunk_in.name
            )
        else:
            outcome = await self._authenticate(request, started)
            if isinstance(outcome, Response):
                return outcome
            caller = _party(outcome, display)
            via = self.trunks.identify(event.source, authenticated=True) if self.trunks is not None else None
            if via is not None:
                # A peer gateway signing in with digest over its trunk: still a trunk call.
                caller = dataclasses.replace(caller, trunk=via.name)
            target_tenant = self._tenant_of_target(request.uri.host, caller.tenant)
            if target_tenant != caller.tenant:
                log.info("cross-tenant call refused", extra={"caller": caller.address, "target": str(request.uri)})
                return make_response(request, 403, "Forbidden (other tenant)", to_tag=stable_tag(request))
        routed = await self._route(request, caller, allow_trunks=trunk_in is None)
        if isinstance(routed, Response):
            return routed
        callee, targets = routed
        if self._call_billing is not None:
            refused = await self._call_billing.authorize(request, caller, callee, stable_tag(request))
            if refused is not None:
                return refused
        try:
            offer = parse_sdp(sdp_of(request.headers.get("Content-Type") or "", request.body) or b"")
        except SdpError:
            return make_response(
                request, 488, "Not Acceptable Here (an SDP offer is required)", to_tag=stable_tag(request)
            )
        audio_like = max(1, len(offer.media))
        streams: list[MediaStream] = []
        session_id = parse_session_id(request.headers.get("Session-ID")) or new_session_id()
        try:
            for index in range(audio_like):
                streams.append(await self._media.open_stream(f"{session_id}/{index}"))
        except Exception as exc:  # port range exhausted or similar: refuse, don't crash
            for s in streams:
                await s.close()
            log.error("cannot open media", extra={"error": str(exc)})
            return make_response(request, 503, "Service Unavailable (no media ports)", to_tag=stable_tag(request))
        call = Call(
            session_id=session_id,
            caller=caller,
            callee=callee,
            invite=request,
            invite_key=event.key,
            source=event.source,
            settings=CallSettings(
                local_hosts=tuple((t, self.host_for(t)) for t in self.transports),
                media_address=self.settings.media_address,
                user_agent=self.settings.user_agent,
                ring_timeout=self.settings.ring_timeout,
                shard=self.settings.shard,
            ),
            started=started,
            caller_uuid=parse_session_id(request.headers.get("Session-ID")) or "0" * 32,
        )
        log.info(
            "call",
            extra={"session": session_id, "caller": caller.address, "callee": callee.address, "forks": len(targets)},
        )
        return call, targets, streams, tuple(m.kind for m in offer.media)

    async def _answered(self, call: Call, streams: list[MediaStream]) -> None:
        # One task for both (a task costs more than either does with an in-process relay);
        # metering starts even if the relay failed.
        try:
            await self._arm_timeouts(streams)
        finally:
            await self._billing_answered(call)

    async def _billing_answered(self, call: Call) -> None:
        if self._call_billing is None or call.answered_at is None:
            return
        provisional = self._record(call, CallEnded("answered", 200, "system"), MediaStats())
        if not await self._call_billing.answered(provisional):
            log.info("answered call has no credit: ending it", extra={"session": call.session_id})
            self._end_by_billing(call.session_id)

    def _end_by_billing(self, session_id: str) -> None:
        call = next((c for c in self._calls if c.session_id == session_id), None)
        if call is None or call in self._ending:
            return
        now = self._clock.monotonic()
        self._act(call, call.hangup("system", now), now)
        self._after(now)

    def _is_ingress(self, caller: Party) -> bool:
        """Whether the call entered the network here (and is rated here): see DECISIONS.md."""
        if not caller.via_trunk or self.trunks is None:
            return True
        trunk = self.trunks.get(caller.trunk)
        return trunk is None or trunk.rates_inbound

    async def _authenticate(self, request: Request, now: float) -> User | Response:
        """The user a request's Proxy-Authorization proves, or the 407 to send."""
        tenant = self.settings.tenant_for_domain(request.from_.uri.host)
        creds = credentials_of(request, "Proxy-Authorization")
        if creds is None:
            return challenge_response(request, self._auth, tenant, now, proxy=True)
        from_user = request.from_.uri.user or ""
        user = await self._users.get(tenant, from_user) if from_user else None
        ha1 = user.ha1(creds.algorithm) if user is not None else None
        now = self._clock.monotonic()
        result = self._auth.verify(creds, request.method, tenant, ha1, now)
        if not isinstance(result, AuthAccepted) or user is None or result.username != from_user:
            self._metrics.auth_failures.labels(request.method).inc()
            stale = getattr(result, "stale", False)
            return challenge_response(request, self._auth, tenant, now, stale=stale, proxy=True)
        return user

    async def _route(
        self, request: Request, caller: Party, allow_trunks: bool
    ) -> Response | tuple[Party, list[ForkTarget]]:
        """Who the Request-URI names, and where to fork: a local user's phones, or a trunk."""
        tenant = caller.tenant
        dialled = request.uri.user or ""
        user = await self._users.get(tenant, dialled) if dialled else None
        if user is None and allow_trunks and self.trunks is not None:
            route = route_number(self.settings.dial_plan(tenant), dialled)
            if route is not None:
                return self._trunk_targets(request, caller, route.trunk, route.number)
        if user is None and dialled.isdigit():
            user = await self._users.by_number(tenant, dialled)
        if user is None:
            return make_response(request, 404, to_tag=stable_tag(request))
        bindings = await self._locations.get(user.aor, self._clock.monotonic())
        if not bindings:
            return make_response(request, 480, to_tag=stable_tag(request))
        targets = [ForkTarget(b.contact, self._destination_for(b.contact, b.source)) for b in bindings]
        return _party(user), targets

    def _trunk_targets(
        self, request: Request, caller: Party, name: str, number: str
    ) -> Response | tuple[Party, list[ForkTarget]]:
        assert self.trunks is not None
        trunk = self.trunks.get(name)
        if trunk is None:
            return make_response(request, 503, f"Service Unavailable (no trunk {name})", to_tag=stable_tag(request))
        why = self.trunks.unavailable_reason(name)
        if why is not None:
            log.warning("call to an unavailable trunk refused", extra={"trunk": name, "reason": why})
            return make_response(request, 503, f"Service Unavailable ({why})", to_tag=stable_tag(request))
        target = ForkTarget(
            contact=f"sip:{number}@{trunk.sip_domain}",
            destination=self.trunks.peer_of(trunk),
            from_uri=f"sip:{trunk.username or caller.number or caller.user}@{trunk.sip_domain}",
            to_uri=f"sip:{number}@{trunk.sip_domain}",
            credentials=self.trunks.credentials(trunk),
            timers=self.trunks.timers(trunk),
        )
        return Party(number, caller.tenant, trunk.billing_site, trunk=name), [target]

    async def request(self, request: Request, destination: Peer, timers: TimerConfig | None = None) -> Response | None:
        """Send a request of the gateway's own (OPTIONS, REGISTER to a trunk); None on timeout."""
        now = self._clock.monotonic()
        key = self._txn.send_request(request, destination, now, timers)
        future: asyncio.Future[Response | None] = asyncio.get_running_loop().create_future()
        self._own[key] = future
        self._after(now)
        try:
            return await future
        finally:
            self._own.pop(key, None)

    def _destination_for(self, contact: str, source: Peer) -> Peer:
        """Where to send a request for a binding: back along its flow, else to its Contact.

        A phone behind NAT is reachable only where its REGISTER came from; over TCP/TLS
        that is its connection, and once that connection is gone the Contact is all we have.
        """
        if not source.reliable:
            return source
        stream = self._stream_transports.get(source.transport)
        if stream is not None and stream.has_connection(source):
            return source
        if stream is None and self._link is not None:
            return source  # worker 0 holds the connection; it is the phone's flow
        return _peer_of_contact(contact, source.transport) or source

    def _tenant_of_target(self, host: str, caller_tenant: str) -> str:
        bare = host.strip("[]")
        try:
            ipaddress.ip_address(bare)
            return caller_tenant  # dialled by our address: the caller's own tenant
        except ValueError:
            return self.settings.tenant_for_domain(host)

    # --- actions -------------------------------------------------------------------------

    def _act(self, call: Call, actions: list[Action], now: float) -> None:
        for action in actions:
            if isinstance(action, SendRequest):
                try:
                    key = self._txn.send_request(action.request, action.destination, now)
                except TransactionError as exc:
                    log.warning("cannot send request", extra={"error": str(exc)})
                    continue
                self._by_key[key] = call
                self._keys_of.setdefault(call, []).append(key)
            elif isinstance(action, SendAck):
                self._txn.send_stateless(action.request, action.destination)
            elif isinstance(action, SendResponse):
                self._respond(action.key, action.response, now)
            elif isinstance(action, MediaRemoteChanged):
                if action.leg == "b" and call.answered_at in (None, now):  # the answer, not later re-offers
                    self._accepted[call] = tuple(e is not None for e in action.endpoints)
                # An in-process relay takes the address at once: no task per answer and offer.
                later = [
                    (stream, endpoint)
                    for stream, endpoint in zip(self._media_streams.get(call, []), action.endpoints, strict=False)
                    if not stream.set_remote_now(action.leg, endpoint)
                ]
                if later:
                    self._spawn(self._set_remotes(later, action.leg))
            elif isinstance(action, DtmfToSend):
                self._spawn(self._play_dtmf(call, action))
            elif isinstance(action, CallAnswered):
                log.info("answered", extra={"session": call.session_id, "codec": action.codec})
                self._cancel_ringing_checkpoint(call)
                self._want_checkpoint(call)
                self._spawn(self._answered(call, self._media_streams.get(call, [])))
                limit = self.settings.max_call_duration(call.caller.tenant)
                if limit is not None and call.answered_at is not None:
                    call.hangup_deadline = call.answered_at + limit
            elif isinstance(action, CallEnded):
                self._cancel_ringing_checkpoint(call)
                self._ending.add(call)
                self._spawn(self._end(call, action))
        self._index(call)
        self._track(call)
        self._reapable.add(call)

    def _cancel_ringing_checkpoint(self, call: Call) -> None:
        handle = self._ringing_checkpoints.pop(call, None)
        if handle is not None:
            handle.cancel()

    def _index(self, call: Call) -> None:
        # After every action: most of the time both dialogs are indexed already.
        known = self._dialogs_of.get(call)
        for dialog in (call.a, call.b):
            if dialog is not None:
                dialog_id = dialog.id
                if known is None:
                    known = self._dialogs_of[call] = set()
                elif dialog_id in known:
                    continue
                self._by_dialog[dialog_id] = call
                known.add(dialog_id)

    def _track(self, call: Call) -> None:
        """Keep the call's next deadline in the timer heap (after anything that may change it)."""
        deadline = call.next_deadline() if call in self._calls else None
        if deadline is None:
            self._deadline_of.pop(call, None)
        elif self._deadline_of.get(call) != deadline:
            self._deadline_of[call] = deadline
            heapq.heappush(self._deadlines, (deadline, next(self._heap_seq), call))
            if len(self._deadlines) > 2 * len(self._deadline_of) + 1024:
                # Superseded entries for far-off deadlines (call limits) would pile up: rebuild.
                self._deadlines = [(d, next(self._heap_seq), c) for c, d in self._deadline_of.items()]
                heapq.heapify(self._deadlines)

    async def _end(self, call: Call, ended: CallEnded) -> None:
        stats = await self._close_media(call)
        record = self._record(call, ended, stats)
        # The record is durable before anyone is told the call is over.
        await self._cdrs.write(record)
        self._metrics.calls.labels(ended.disposition).inc()
        now = self._clock.monotonic()
        for send in ended.then_send:
            self._respond(send.key, send.response, now)
        self._ending.discard(call)
        self._reapable.add(call)
        log.info(
            "call ended",
            extra={"session": call.session_id, "disposition": ended.disposition, "status": ended.status},
        )
        for listener in self.call_listeners:
            await listener(record)
        self._after(now)

    async def _close_media(self, call: Call) -> MediaStats:
        total = MediaStats()
        for stream in self._media_streams.pop(call, []):
            self._by_stream.pop(stream.stream_id, None)
            try:
                total = total + await stream.close()
            except Exception:
                # The call's record must still be written and its BYE answered: a stream that
                # fails to close counts as having carried nothing.
                log.exception("closing a media stream failed", extra={"session": call.session_id})
        return total

    @staticmethod
    async def _set_remotes(remotes: list[tuple[MediaStream, Addr | None]], leg: Leg) -> None:
        for stream, endpoint in remotes:
            await stream.set_remote(leg, endpoint)

    async def _play_dtmf(self, call: Call, dtmf: DtmfToSend) -> None:
        """A SIP INFO digit, played into the audio stream as RFC 4733 packets, paced at 20 ms."""
        streams = self._media_streams.get(call)
        if not streams:
            return
        sender = self._dtmf_senders.setdefault((call, dtmf.leg), DtmfSender(dtmf.payload_type))
        sender.payload_type = dtmf.payload_type
        loop = asyncio.get_running_loop()
        start = loop.time()
        for at, datagram in sender.packets(dtmf.digit, dtmf.duration_ms, start):
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await streams[0].inject(dtmf.leg, [datagram])
        log.info("INFO digit sent as RFC 4733", extra={"session": call.session_id, "digit": dtmf.digit})

    @staticmethod
    async def _arm_timeouts(streams: list[MediaStream]) -> None:
        for stream in streams:
            await stream.arm_timeout()

    def _media_stopped(self, stream_id: str) -> None:
        """A phone stopped sending media (vanished without BYE): end its call on both legs."""
        call = self._by_stream.get(stream_id)
        if call is None or call in self._ending:
            return
        now = self._clock.monotonic()
        log.info("media timeout", extra={"session": call.session_id, "stream": stream_id})
        self._act(call, call.hangup("system", now), now)
        self._after(now)

    def _want_checkpoint(self, call: Call) -> None:
        """Checkpoint ``call`` soon, together with the others wanted meanwhile."""
        self._ringing_checkpoints.pop(call, None)
        self._checkpoints_wanted[call] = None
        if self._checkpoint_batch is None:
            self._checkpoint_batch = asyncio.get_running_loop().call_later(
                self.settings.checkpoint_batch_delay, self._write_wanted_checkpoints
            )

    def _write_wanted_checkpoints(self) -> None:
        self._checkpoint_batch = None
        calls = list(self._checkpoints_wanted)
        self._checkpoints_wanted.clear()
        self._spawn(self._checkpoint(calls))

    async def _checkpoint(self, calls: list[Call]) -> None:
        """Store what each call's record would say if the gateway died now, in one transaction."""
        taken: list[tuple[Call, CallRecord]] = []
        for call in calls:
            # An ended call is done with checkpoints: its record is written or on its way (and
            # it may stay listed a while after, until its BYE transactions are answered).
            if call.ended_at is not None or call not in self._anchors:
                continue
            stats = MediaStats()
            for stream in self._media_streams.get(call, []):
                stats = stats + await stream.stats()
            answered = call.answered_at is not None
            provisional = CallEnded("answered" if answered else "failed", 200 if answered else 500, "system")
            taken.append((call, self._record(call, provisional, stats, end=self._clock.monotonic())))
        # A call may have ended while the counters were read: its record is on its way, and a
        # checkpoint queued after it would outlive the call.
        records = [record for call, record in taken if call.ended_at is None]
        if records:
            await self._cdrs.checkpoint(records)

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.checkpoint_interval)
            if self.notifier is not None:
                for notify in self.notifier.expire(self._clock.monotonic()):
                    self._spawn(self._send_notify(notify))
            await self._checkpoint([c for c in self._calls if c.answered_at is not None])

    def _record(self, call: Call, ended: CallEnded, stats: MediaStats, end: float | None = None) -> CallRecord:
        anchor = self._anchors[call]
        if end is None:
            end = call.ended_at if call.ended_at is not None else self._clock.monotonic()
        ingress = self._is_ingress(call.caller)
        return CallRecord(
            session_id=call.session_id,
            # The entering gateway's caller-side leg is "a"; gateways the call passes through
            # name theirs after themselves, so every leg of a session has its own key network-wide.
            leg="a" if ingress else f"a@{self.settings.node}",
            node=self.settings.node,
            tenant=call.caller.tenant,
            site=call.caller.site,
            caller=call.caller.record_name,
            callee=call.callee.record_name,
            account=call.caller.account or call.caller.address,
            ingress=ingress,
            category=self._category(call),
            start=anchor.utc(call.started),
            answer=anchor.utc(call.answered_at) if call.answered_at is not None else None,
            end=anchor.utc(end),
            disposition=ended.disposition,
            sip_status=ended.status,
            codec=call.codec,
            packets_in=stats.packets_in,
            packets_out=stats.packets_out,
            bytes_in=stats.bytes_in,
            bytes_out=stats.bytes_out,
            call_id=call.invite.call_id,
            ended_by=ended.ended_by,
        )

    def _category(self, call: Call) -> Category:
        agent = self._webrtc_agent
        callee_is_browser = agent is not None and call.b is not None and call.b.destination == agent
        kinds = self._media_kinds.get(call, ())
        return call_category(kinds, self._accepted.get(call, ()), call.source == agent, callee_is_browser)

    def _reap(self) -> None:
        """Forget calls that are over and owe nothing (no fork, relay or record outstanding)."""
        candidates, self._reapable = self._reapable, set()
        for call in candidates:
            if not call.finished or call in self._ending or call in self._media_streams:
                continue  # acted on again (or its record written) before it can be finished
            self._calls.discard(call)
            self._cancel_ringing_checkpoint(call)
            self._checkpoints_wanted.pop(call, None)
            self._anchors.pop(call, None)
            self._deadline_of.pop(call, None)
            for leg in ("a", "b"):
                self._dtmf_senders.pop((call, leg), None)
            self._media_kinds.pop(call, None)
            self._accepted.pop(call, None)
            for key in self._keys_of.pop(call, ()):
                if self._by_key.get(key) is call:
                    del self._by_key[key]
            for dialog_id in self._dialogs_of.pop(call, ()):
                if self._by_dialog.get(dialog_id) is call:
                    del self._by_dialog[dialog_id]
        if not self._calls:
            self._idle.set()

    # --- output --------------------------------------------------------------------------

    def _respond(self, key: TxKey, response: Response, now: float) -> None:
        try:
            self._txn.respond(key, response, now)
        except TransactionError as exc:
            log.debug("response dropped", extra={"error": str(exc)})

    def _flush(self) -> None:
        outgoing = self._txn.take_outgoing()
        if not outgoing:
            return
        self._message_counts.sent += len(outgoing)
        for data, destination in outgoing:
            if self._log_messages:
                first = data.split(b"\r\n", 1)[0].decode(errors="replace")
                log.debug("sip out", extra={"peer": str(destination), "first_line": first})
            if destination.transport == "UDP":
                if self._transport is not None:
                    self._transport.send(data, (destination.host, destination.port))
                continue
            if self._link is not None and destination.transport not in self._stream_transports:
                self._link.send_via(0, data, destination)
                continue
            self._send_stream(data, destination)

    def _rearm(self, now: float) -> None:
        heap = self._deadlines
        while heap and self._deadline_of.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # superseded or reaped
        when = self._txn.next_deadline()
        if heap and (when is None or heap[0][0] < when):
            when = heap[0][0]
        if when is None:
            return
        if self._timer_at is not None and self._timer_at <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = when
        self._timer = loop.call_at(loop.time() + max(0.0, when - now), self._on_timer)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sip task failed", exc_info=task.exception())


def _unchallenged_invite(request: Request) -> bool:
    """A new call not challenged yet: what overload refuses (finishing a challenged one costs
    less than refusing it and starting again)."""
    return request.method == "INVITE" and not request.to.tag and "Proxy-Authorization" not in request.headers


def _overload_refusal(invite: Request) -> Response:
    extra = [("Retry-After", str(RETRY_AFTER_S))]
    return make_response(invite, 503, "Service Unavailable (overloaded)", to_tag=stable_tag(invite), extra=extra)


def _peer_of_contact(contact: str, transport: str) -> Peer | None:
    """Where a Contact URI says to send (its transport parameter, else ``transport``)."""
    try:
        uri = parse_uri(contact)
    except SipError:
        return None
    transport = (uri.param("transport") or transport).upper()
    default_port = 5061 if transport == "TLS" else 5060
    return Peer(uri.host.strip("[]"), uri.port or default_port, transport)


def _party(user: User, display: str = "") -> Party:
    return Party(user.username, user.tenant, user.site, display, number=user.number or "")


def _reason(exc: SipParseError) -> str:
    from gateway.sip.message import REASONS

    base = REASONS.get(exc.status, "Bad Request")
    return f"{base} ({str(exc)[:80]})"
