"""The SIP service: feeds datagrams to the transaction core and acts on what comes out.

This is the one place where SIP meets I/O: the UDP transport, the one timer,
the stores (users, locations, call records) and the media relay. Protocol
decisions are made by the cores (parser, transactions, registrar, Call); this
module routes events between them and carries out their actions.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.b2bua import (
    Action,
    Call,
    CallAnswered,
    CallEnded,
    CallSettings,
    ForkTarget,
    MediaRemoteChanged,
    Party,
    SendAck,
    SendRequest,
    SendResponse,
    StreamPorts,
    parse_session_id,
)
from gateway.cdr import CallRecord, Category
from gateway.cdr_store import CdrStore
from gateway.clock import Clock, WallAnchor
from gateway.location import LocationStore
from gateway.media_port import MediaAllocator, MediaStats, MediaStream
from gateway.metrics import SipMetrics
from gateway.sip.digest import AuthAccepted, DigestAuthenticator
from gateway.sip.errors import SipError, TransactionError
from gateway.sip.message import Request, Response, make_response, response_from_headers
from gateway.sip.parser import Limits, SipParseError, can_answer, parse_message
from gateway.sip.registrar import RegistrarPolicy, challenge_response, credentials_of, process_register
from gateway.sip.sdp import SdpError, parse_sdp
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
)
from gateway.transport_udp import UdpTransport, open_udp
from gateway.users import User, UserStore
from gateway.webrtc.category import call_category

Addr = tuple[str, int]
log = logging.getLogger("seabridge.sip")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REGISTER"


@dataclass(frozen=True)
class SipSettings:
    node: str
    bind: str
    port: int
    advertised_address: str
    media_address: str
    timers: TimerConfig
    policy: RegistrarPolicy
    limits: Limits
    ring_timeout: float
    rtp_timeout: float
    user_agent: str
    tenant_for_domain: Callable[[str], str]


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
        self._transport: UdpTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending: dict[TxKey, _Pending] = {}
        self._calls: set[Call] = set()
        self._by_key: dict[TxKey, Call] = {}
        self._by_dialog: dict[tuple[str, str], Call] = {}
        self._streams: dict[Call, list[MediaStream]] = {}
        self._anchors: dict[Call, WallAnchor] = {}
        self._ending: set[Call] = set()
        self._by_stream: dict[str, Call] = {}
        self.call_listeners: list[Callable[[CallRecord], Awaitable[None]]] = []
        # The browser phone's SIP agent: calls from or to it are categorised for billing.
        self._webrtc_agent: Addr | None = None
        self._media_kinds: dict[Call, tuple[str, ...]] = {}
        self._accepted: dict[Call, tuple[bool, ...]] = {}

    # --- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        self._transport = await open_udp(self.settings.bind, self.settings.port, self.datagram_received)
        self._media.on_timeout(self._media_stopped)
        log.info("sip listening", extra={"udp": f"{self.settings.bind}:{self.local_port}"})

    @property
    def local_port(self) -> int:
        assert self._transport is not None
        return self._transport.local_address[1]

    @property
    def local_host(self) -> str:
        host = self.settings.advertised_address
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.local_port}"

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for call in list(self._calls):
            await self._close_media(call)
        if self._transport is not None:
            self._transport.close()

    def set_webrtc_agent(self, address: Addr) -> None:
        self._webrtc_agent = address

    @property
    def calls_in_progress(self) -> int:
        return len(self._calls)

    @property
    def transactions(self) -> int:
        return len(self._txn)

    # --- input ---------------------------------------------------------------------------

    def datagram_received(self, data: bytes, source: Addr) -> None:
        if not data.strip():
            return  # CRLF keep-alive (RFC 5626 section 4.4.1)
        now = self._clock.monotonic()
        self._metrics.messages.labels("in").inc()
        try:
            message = parse_message(data, self.settings.limits)
        except SipParseError as exc:
            self._metrics.parse_errors.inc()
            log.info("unparseable sip", extra={"source": f"{source[0]}:{source[1]}", "error": str(exc)})
            if exc.is_request and can_answer(exc.partial):
                assert exc.partial is not None
                response = response_from_headers(exc.partial, exc.status, _reason(exc))
                try:
                    top = parse_message(bytes(response)).top_via
                    self._txn.send_stateless(response, response_destination(top, source))
                except SipError:
                    pass
                self._flush()
            return
        try:
            events = self._txn.receive(message, source, now)
        except SipError as exc:
            self._metrics.parse_errors.inc()
            log.info("unusable sip", extra={"source": f"{source[0]}:{source[1]}", "error": str(exc)})
            return
        self._handle(events, now)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self._clock.monotonic()
        events = self._txn.handle_timers(now)
        self._handle(events, now)
        for call in list(self._calls):
            deadline = call.next_deadline()
            if deadline is not None and deadline <= now:
                self._act(call, call.on_timer(now), now)
        self._after(now)

    def _handle(self, events: list[Event], now: float) -> None:
        for event in events:
            try:
                self._dispatch(event, now)
            except SipError as exc:
                log.warning("sip error", extra={"error": str(exc)})
        self._after(now)

    def _after(self, now: float) -> None:
        self._reap()
        self._flush()
        self._rearm(now)

    def _dispatch(self, event: Event, now: float) -> None:
        if isinstance(event, RequestReceived):
            self._on_request(event, now)
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
        elif isinstance(event, TransactionTimedOut):
            call = self._by_key.get(event.key)
            if call is not None:
                self._act(call, call.on_timeout(event.key, now), now)

    def _on_request(self, event: RequestReceived, now: float) -> None:
        request = event.request
        method = request.method
        to_tag = request.to.tag
        if method == "CANCEL":
            self._on_cancel(event, now)
        elif to_tag:
            call = self._by_dialog.get((request.call_id, to_tag))
            leg = call.leg_of(request.call_id, to_tag) if call is not None else None
            if call is None or leg is None:
                self._respond(event.key, make_response(request, 481), now)
            else:
                self._act(call, call.on_request(leg, event.key, request, now), now)
        elif method == "REGISTER":
            self._spawn(self._register(event))
        elif method == "INVITE":
            self._pending[event.key] = _Pending()
            self._spawn(self._invite(event))
        elif method == "OPTIONS":
            extra = [("Allow", ALLOW), ("Accept", "application/sdp"), ("Server", self.settings.user_agent)]
            self._respond(event.key, make_response(request, 200, to_tag=_tag(request), extra=extra), now)
        elif method in ("BYE", "INFO", "UPDATE", "PRACK"):
            self._respond(event.key, make_response(request, 481, to_tag=_tag(request)), now)
        else:
            self._respond(event.key, make_response(request, 405, to_tag=_tag(request), extra=[("Allow", ALLOW)]), now)

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
        user = await self._users.get(tenant, username) if username else None
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
            log.info("register refused", extra={"aor": aor, "source": f"{event.source[0]}:{event.source[1]}"})
        if outcome.bindings is not None:
            await self._locations.put(aor, outcome.bindings, now)
            log.info("registered", extra={"aor": aor, "contacts": len(outcome.bindings)})
        self._respond(event.key, outcome.response, self._clock.monotonic())

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
                response_or_call = make_response(event.request, 487, to_tag=_tag(event.request))
            self._respond(key, response_or_call, now)
            return
        call, targets, streams = response_or_call
        self._calls.add(call)
        self._media_kinds[call] = _media_kinds(call.invite.body)
        self._metrics.calls_in_progress.set(len(self._calls))
        self._by_key[key] = call
        self._streams[call] = streams
        for stream in streams:
            self._by_stream[stream.stream_id] = call
        self._anchors[call] = WallAnchor(call.started, self._clock.wall() - (now - call.started))
        actions = call.start(targets, [StreamPorts(s.a_port, s.b_port) for s in streams], now)
        if pending is not None and pending.cancelled:
            actions += call.on_cancel(now)
        self._act(call, actions, now)
        self._after(now)

    async def _set_up(self, event: RequestReceived) -> Response | tuple[Call, list[ForkTarget], list[MediaStream]]:
        request = event.request
        started = self._clock.monotonic()
        if request.headers.get("Max-Forwards") == "0":
            return make_response(request, 483, to_tag=_tag(request))
        caller_domain = request.from_.uri.host
        tenant = self.settings.tenant_for_domain(caller_domain)
        creds = credentials_of(request, "Proxy-Authorization")
        if creds is None:
            return challenge_response(request, self._auth, tenant, started, proxy=True)
        from_user = request.from_.uri.user or ""
        caller = await self._users.get(tenant, from_user) if from_user else None
        ha1 = caller.ha1(creds.algorithm) if caller is not None else None
        now = self._clock.monotonic()
        result = self._auth.verify(creds, "INVITE", tenant, ha1, now)
        if not isinstance(result, AuthAccepted) or caller is None or result.username != from_user:
            self._metrics.auth_failures.labels("INVITE").inc()
            stale = getattr(result, "stale", False)
            return challenge_response(request, self._auth, tenant, now, stale=stale, proxy=True)

        target_user = request.uri.user or ""
        target_tenant = self._tenant_of_target(request.uri.host, caller.tenant)
        if target_tenant != caller.tenant:
            log.info("cross-tenant call refused", extra={"caller": caller.aor, "target": str(request.uri)})
            return make_response(request, 403, "Forbidden (other tenant)", to_tag=_tag(request))
        callee = await self._users.get(caller.tenant, target_user) if target_user else None
        if callee is None:
            return make_response(request, 404, to_tag=_tag(request))
        bindings = await self._locations.get(callee.aor, self._clock.monotonic())
        if not bindings:
            return make_response(request, 480, to_tag=_tag(request))
        try:
            offer = parse_sdp(request.body)
        except SdpError:
            return make_response(request, 488, "Not Acceptable Here (an SDP offer is required)", to_tag=_tag(request))
        audio_like = max(1, len(offer.media))
        streams: list[MediaStream] = []
        session_id = parse_session_id(request.headers.get("Session-ID")) or uuid.uuid4().hex
        try:
            for index in range(audio_like):
                streams.append(await self._media.open_stream(f"{session_id}/{index}"))
        except Exception as exc:  # port range exhausted or similar: refuse, don't crash
            for s in streams:
                await s.close()
            log.error("cannot open media", extra={"error": str(exc)})
            return make_response(request, 503, "Service Unavailable (no media ports)", to_tag=_tag(request))
        call = Call(
            session_id=session_id,
            caller=_party(caller, request.from_.display.strip('"')),
            callee=_party(callee),
            invite=request,
            invite_key=event.key,
            source=event.source,
            settings=CallSettings(
                local_host=self.local_host,
                media_address=self.settings.media_address,
                user_agent=self.settings.user_agent,
                ring_timeout=self.settings.ring_timeout,
            ),
            started=started,
            caller_uuid=parse_session_id(request.headers.get("Session-ID")) or "0" * 32,
        )
        targets = [ForkTarget(b.contact, b.source) for b in bindings]
        log.info(
            "call",
            extra={"session": session_id, "caller": caller.aor, "callee": callee.aor, "forks": len(targets)},
        )
        return call, targets, streams

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
            elif isinstance(action, SendAck):
                self._txn.send_stateless(action.request, action.destination)
            elif isinstance(action, SendResponse):
                self._respond(action.key, action.response, now)
            elif isinstance(action, MediaRemoteChanged):
                if action.leg == "b" and call.answered_at in (None, now):  # the answer, not later re-offers
                    self._accepted[call] = tuple(e is not None for e in action.endpoints)
                streams = self._streams.get(call, [])
                self._spawn(self._set_remotes(streams, action))
            elif isinstance(action, CallAnswered):
                log.info("answered", extra={"session": call.session_id, "codec": action.codec})
                self._spawn(self._arm_timeouts(self._streams.get(call, [])))
            elif isinstance(action, CallEnded):
                self._ending.add(call)
                self._spawn(self._end(call, action))
        self._index(call)

    def _index(self, call: Call) -> None:
        for dialog in (call.a, call.b):
            if dialog is not None:
                self._by_dialog[dialog.id] = call

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
        log.info(
            "call ended",
            extra={"session": call.session_id, "disposition": ended.disposition, "status": ended.status},
        )
        for listener in self.call_listeners:
            await listener(record)
        self._after(now)

    async def _close_media(self, call: Call) -> MediaStats:
        total = MediaStats()
        for stream in self._streams.pop(call, []):
            self._by_stream.pop(stream.stream_id, None)
            total = total + await stream.close()
        return total

    @staticmethod
    async def _set_remotes(streams: list[MediaStream], change: MediaRemoteChanged) -> None:
        for stream, endpoint in zip(streams, change.endpoints, strict=False):
            await stream.set_remote(change.leg, endpoint)

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

    def _record(self, call: Call, ended: CallEnded, stats: MediaStats) -> CallRecord:
        anchor = self._anchors[call]
        end = call.ended_at if call.ended_at is not None else self._clock.monotonic()
        return CallRecord(
            session_id=call.session_id,
            leg="a",
            node=self.settings.node,
            tenant=call.caller.tenant,
            site=call.caller.site,
            caller=call.caller.address,
            callee=call.callee.address,
            account=call.caller.address,
            ingress=True,
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
        for call in [c for c in self._calls if c.finished and c not in self._ending and c not in self._streams]:
            self._calls.discard(call)
            self._anchors.pop(call, None)
            self._media_kinds.pop(call, None)
            self._accepted.pop(call, None)
            for key in [k for k, c in self._by_key.items() if c is call]:
                del self._by_key[key]
            for dialog_id in [d for d, c in self._by_dialog.items() if c is call]:
                del self._by_dialog[dialog_id]
        self._metrics.calls_in_progress.set(len(self._calls))
        self._metrics.transactions.set(len(self._txn))

    # --- output --------------------------------------------------------------------------

    def _respond(self, key: TxKey, response: Response, now: float) -> None:
        try:
            self._txn.respond(key, response, now)
        except TransactionError as exc:
            log.debug("response dropped", extra={"error": str(exc)})

    def _flush(self) -> None:
        if self._transport is None:
            return
        for data, destination in self._txn.take_outgoing():
            self._metrics.messages.labels("out").inc()
            self._transport.send(data, destination)

    def _rearm(self, now: float) -> None:
        deadlines = [d for d in (self._txn.next_deadline(),) if d is not None]
        deadlines += [d for d in (c.next_deadline() for c in self._calls) if d is not None]
        if not deadlines:
            return
        when = min(deadlines)
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


def _media_kinds(body: bytes) -> tuple[str, ...]:
    try:
        return tuple(m.kind for m in parse_sdp(body).media)
    except SdpError:
        return ()


def _party(user: User, display: str = "") -> Party:
    return Party(user.username, user.tenant, user.site, display)


def _tag(request: Request) -> str:
    import hashlib

    return hashlib.sha256(f"{request.call_id}|{request.cseq.number}".encode()).hexdigest()[:12]


def _reason(exc: SipParseError) -> str:
    from gateway.sip.message import REASONS

    base = REASONS.get(exc.status, "Bad Request")
    return f"{base} ({str(exc)[:80]})"
