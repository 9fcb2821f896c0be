"""The browser phone service: signed-in sessions, their calls, and the SIP agent that carries them.

Built once at start-up (``start_webrtc``). Each WebSocket that authenticates
becomes a ``BrowserSession`` registered with the gateway's SIP service as a
contact of its user; each call is one SIP dialog of the agent plus one
``CallMedia``. The agent's events and the page's messages meet here and
nowhere else.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from gateway.cdr import CallRecord
from gateway.cdr_store import CdrStore
from gateway.clock import Clock
from gateway.sip.sdp import SdpError, parse_sdp
from gateway.sip.transaction import TimerConfig
from gateway.users import User, UserError, UserStore, ha1, parse_address
from gateway.webrtc import signalling as sig
from gateway.webrtc.call_media import CallMedia
from gateway.webrtc.config import WebRtcConfig
from gateway.webrtc.errors import SignallingError, TokenRejected
from gateway.webrtc.metrics import WebRtcMetrics
from gateway.webrtc.sip_agent import SipAgent
from gateway.webrtc.sip_sdp import MediaPlan, SdpRefused, plan_from_answer
from gateway.webrtc.sip_ua import (
    Account,
    AgentSettings,
    CallAnswered,
    CallEnded,
    CallFailed,
    CallRinging,
    Event,
    IncomingCallReceived,
    OfferAnswered,
    OfferReceived,
    OfferRefused,
    RegistrationFailed,
    RegistrationSucceeded,
)
from gateway.webrtc.throttle import LoginThrottle
from gateway.webrtc.tokens import SessionClaims, TokenIssuer

Addr = tuple[str, int]
log = logging.getLogger("seabridge.webrtc")
AUTH_TIMEOUT = 10.0


@dataclass
class BrowserCall:
    ref: str  # the agent's call reference
    page_id: str  # the id the page knows the call by
    session: BrowserSession
    outgoing: bool
    peer: str
    media: CallMedia
    sip_offer: bytes = b""
    state: str = "setup"  # setup, ringing, connecting, connected, ended
    end_reason: str | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    timer: asyncio.TimerHandle | None = None
    hold_wanted: bool = False


@dataclass(eq=False)
class BrowserSession:
    id: str
    claims: SessionClaims
    user: User
    ws: web.WebSocketResponse
    calls: dict[str, BrowserCall] = field(default_factory=dict)
    outbox: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    registered: bool | None = None

    @property
    def contact_user(self) -> str:
        return f"wb-{self.id}"

    def post(self, message: dict[str, Any]) -> None:
        self.outbox.put_nowait(message)


class WebRtcService:
    def __init__(
        self,
        config: WebRtcConfig,
        users: UserStore,
        cdrs: CdrStore,
        tenant_for_domain: Callable[[str], str],
        sip_service: Addr,
        tokens: TokenIssuer,
        metrics: WebRtcMetrics,
        clock: Clock,
        timers: TimerConfig,
        user_agent: str = "Seabridge-WebRTC",
    ) -> None:
        self.config = config
        self.users = users
        self.cdrs = cdrs
        self.tokens = tokens
        self.metrics = metrics
        self._tenant_for_domain = tenant_for_domain
        self._clock = clock
        self._throttle = LoginThrottle()
        settings = AgentSettings(
            local_host="",
            service=sip_service,
            user_agent=user_agent,
            timers=timers,
            register_expires=config.register_expires_s,
        )
        self.agent = SipAgent(settings, clock, self._on_agent_event)
        self._sessions: dict[str, BrowserSession] = {}
        self._calls: dict[str, BrowserCall] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Unknown users cost the same HA1 computation and comparison as known ones.
        self._decoy_ha1 = secrets.token_hex(32)

    async def start(self) -> Addr:
        return await self.agent.start(self.config.agent_address, self.config.agent_port)

    @property
    def agent_address(self) -> Addr:
        return self.agent.local_address

    async def stop(self) -> None:
        for session in list(self._sessions.values()):
            await session.ws.close(code=1001, message=b"gateway stopping")
        for call in list(self._calls.values()):
            self.agent.hangup(call.ref)
            await self._finish(call, "hangup", 0)
        for session in list(self._sessions.values()):
            self.agent.unregister(session.id)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.agent.close()

    # --- sign-in -----------------------------------------------------------------------------------

    async def login(self, address: str, password: str, source: str) -> tuple[str, SessionClaims] | None:
        """A session token for the right user@tenant and SIP password; None (and a throttle mark) otherwise."""
        now = self._clock.monotonic()
        if not self._throttle.allowed(source, now):
            self.metrics.logins.labels("throttled").inc()
            raise PermissionError("too many failed sign-ins from this address; wait a minute")
        user: User | None = None
        try:
            username, domain = parse_address(address.strip())
            tenant = self._tenant_for_domain(domain)
            user = await self.users.get(tenant, username)
        except UserError:
            username, tenant = "", ""
        expected = user.ha1_sha256 if user is not None else self._decoy_ha1
        given = ha1("SHA-256", username, tenant, password)
        if user is None or not hmac.compare_digest(expected, given):
            self._throttle.failed(source, self._clock.monotonic())
            self.metrics.logins.labels("refused").inc()
            log.info("webrtc sign-in refused", extra={"address": address[:80], "source": source})
            return None
        self._throttle.succeeded(source)
        self.metrics.logins.labels("accepted").inc()
        log.info("webrtc sign-in", extra={"user": user.aor, "source": source})
        return self.tokens.issue(user.username, user.tenant, time.time())

    async def user_for_token(self, token: str) -> tuple[SessionClaims, User]:
        claims = self.tokens.verify(token, time.time())
        user = await self.users.get(claims.tenant, claims.username)
        if user is None:
            raise TokenRejected("no such user any more")
        return claims, user

    async def recent_calls(self, user: User, limit: int = 50) -> list[CallRecord]:
        records = await self.cdrs.list(user.tenant, limit=1000)
        return [r for r in records if user.aor in (r.caller, r.callee)][:limit]

    # --- the WebSocket -------------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=sig.MAX_FRAME)
        await ws.prepare(request)
        session = await self._authenticate(ws)
        if session is None:
            return ws
        writer = asyncio.ensure_future(self._write(session))
        expired = False
        try:
            while True:
                # The sign-in ends when its token expires, even on a socket opened before that.
                remaining = max(0.0, session.claims.expires_at - time.time())
                try:
                    message = await ws.receive(timeout=remaining)
                except TimeoutError:
                    expired = True
                    session.post(sig.error("unauthorized", "sign in again"))
                    log.info("webrtc session expired", extra={"user": session.user.aor, "session": session.id})
                    break
                if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    await self._dispatch(session, sig.parse_client_message(message.data))
                except SignallingError as exc:
                    session.post(sig.error(exc.code, str(exc)))
        finally:
            await self._close_session(session)
            session.outbox.put_nowait(None)
            await asyncio.gather(writer, return_exceptions=True)
        if expired:
            await ws.close(code=4401, message=b"unauthorized")
        return ws

    async def _authenticate(self, ws: web.WebSocketResponse) -> BrowserSession | None:
        try:
            first = await ws.receive(timeout=AUTH_TIMEOUT)
        except TimeoutError:
            await _refuse(ws, "unauthorized", "no auth message")
            return None
        try:
            if first.type != WSMsgType.TEXT:
                raise SignallingError("authenticate first")
            message = sig.parse_client_message(first.data)
            if not isinstance(message, sig.Authenticate):
                raise SignallingError("authenticate first")
            claims, user = await self.user_for_token(message.token)
        except (SignallingError, TokenRejected) as exc:
            log.info("webrtc session refused", extra={"reason": str(exc)})
            await _refuse(ws, "unauthorized", "sign in again")
            return None
        mine = [s for s in self._sessions.values() if s.user.aor == user.aor]
        if len(mine) >= self.config.max_sessions_per_user:
            await _refuse(ws, "too_many_sessions", "too many open pages for this user", 4429)
            return None
        session = BrowserSession(secrets.token_hex(8), claims, user, ws)
        self._sessions[session.id] = session
        self.metrics.sessions.set(len(self._sessions))
        account = Account(user.username, user.tenant, {"MD5": user.ha1_md5, "SHA-256": user.ha1_sha256})
        self.agent.register(session.id, account, session.contact_user)
        session.post(
            sig.ready(user.aor, claims.expires_at, self._ice_servers_for_page(), self.config.ice_transport_policy)
        )
        log.info("webrtc session", extra={"user": user.aor, "session": session.id})
        return session

    def _ice_servers_for_page(self) -> list[dict[str, Any]]:
        out = []
        for server in self.config.ice_servers:
            entry: dict[str, Any] = {"urls": list(server.urls)}
            if server.username:
                entry["username"] = server.username
                entry["credential"] = server.credential
            out.append(entry)
        return out

    @staticmethod
    async def _write(session: BrowserSession) -> None:
        while True:
            message = await session.outbox.get()
            if message is None or session.ws.closed:
                return
            try:
                await session.ws.send_str(sig.dump(message))
            except ConnectionError:
                return

    async def _close_session(self, session: BrowserSession) -> None:
        for call in list(session.calls.values()):
            self.agent.hangup(call.ref)
            await self._finish(call, "hangup", 0)
        self._sessions.pop(session.id, None)
        self.metrics.sessions.set(len(self._sessions))
        self.agent.unregister(session.id)
        log.info("webrtc session closed", extra={"user": session.user.aor, "session": session.id})

    # --- the page's requests ------------------------------------------------------------------------------

    async def _dispatch(self, session: BrowserSession, message: sig.ClientMessage) -> None:
        if isinstance(message, sig.Ping):
            session.post({"type": "pong"})
        elif isinstance(message, sig.Authenticate):
            raise SignallingError("already authenticated")
        elif isinstance(message, sig.PlaceCall):
            await self._place_call(session, message)
        else:
            call = session.calls.get(message.call)
            if call is None:
                raise SignallingError(f"no call {message.call}", "no_such_call")
            if isinstance(message, sig.AcceptCall):
                await self._accept(call, message.sdp)
            elif isinstance(message, sig.DeclineCall):
                call.end_reason = "declined"
                self.agent.reject(call.ref, 603)
            elif isinstance(message, sig.HangUp):
                call.end_reason = "hangup"
                self.agent.hangup(call.ref)
            elif isinstance(message, sig.SendDigits):
                self._spawn(self._send_digits(call, message.digits))
            elif isinstance(message, sig.SetHold):
                self._hold(call, message.on)

    async def _place_call(self, session: BrowserSession, message: sig.PlaceCall) -> None:
        if message.call in session.calls:
            raise SignallingError(f"call id {message.call} is in use", "bad_call_id")
        if any(c.state != "ended" for c in session.calls.values()):
            session.post(sig.ended(message.call, "busy_here"))
            return
        ref = f"out-{session.id}-{message.call}"
        call = self._new_call(ref, message.call, session, outgoing=True, peer=message.to)
        try:
            answer = await call.media.answer_browser(message.sdp)
            offer = await call.media.sip_offer()
        except Exception as exc:  # a bad offer from the page, or no ports left
            log.info("webrtc call set-up failed", extra={"user": session.user.aor, "error": str(exc)[:200]})
            await self._finish(call, "failed", 0)
            return
        if call.state == "ended":
            return
        session.post(sig.answer(call.page_id, answer))
        self._arm_connect_timer(call)
        self.agent.invite(ref, session.id, message.to, offer)
        log.info(
            "webrtc call", extra={"caller": session.user.aor, "target": message.to, "video": call.media.browser_video}
        )

    async def _accept(self, call: BrowserCall, offer_sdp: str) -> None:
        if call.outgoing or call.state != "ringing":
            raise SignallingError("this call cannot be answered now", "bad_state")
        call.state = "connecting"
        try:
            answer = await call.media.answer_browser(offer_sdp)
            sip_answer, plan = await call.media.sip_answer(call.sip_offer)
        except (SdpRefused, ValueError, OSError) as exc:
            log.info("webrtc answer failed", extra={"call": call.ref, "error": str(exc)[:200]})
            call.end_reason = "failed"
            self.agent.reject(call.ref, 488)
            return
        if call.state == "ended":
            return
        call.session.post(sig.answer(call.page_id, answer))
        self._arm_connect_timer(call)
        # Answer the phone only once the browser's media path is up: a 200 OK sent earlier
        # would clip the first words (two round trips of ICE and DTLS on a satellite link).
        await call.connected.wait()
        if call.state == "ended":
            return
        self.agent.answer(call.ref, sip_answer)
        self._media_flows(call, plan)

    def _media_flows(self, call: BrowserCall, plan: MediaPlan) -> None:
        call.media.start(plan)
        call.state = "connected"
        video = plan.video is not None and call.media.browser_video
        call.session.post(sig.connected(call.page_id, call.media.mode, video))
        log.info("webrtc call connected", extra={"call": call.ref, "mode": call.media.mode, "video": video})

    async def _send_digits(self, call: BrowserCall, digits: str) -> None:
        for digit in digits:
            if call.state != "connected" or not call.media.send_dtmf(digit):
                call.session.post(sig.error("no_dtmf", "digits cannot be sent in this call", call.page_id))
                return
            await asyncio.sleep(0.3)  # 200 ms tone, 100 ms gap (ITU-T Q.24 allows 40 ms)

    def _hold(self, call: BrowserCall, on: bool) -> None:
        if call.state != "connected":
            raise SignallingError("only a connected call can be held", "bad_state")
        call.hold_wanted = on
        call.media.held = on
        self.agent.reoffer(call.ref, call.media.reoffer(on))

    # --- calls ---------------------------------------------------------------------------------------------

    def _new_call(self, ref: str, page_id: str, session: BrowserSession, outgoing: bool, peer: str) -> BrowserCall:
        media = CallMedia(
            self.config,
            self.metrics,
            self._clock,
            on_dtmf=lambda digit: session.post(sig.dtmf(page_id, digit)),
            on_state=lambda state: self._media_state(ref, state),
        )
        call = BrowserCall(ref, page_id, session, outgoing, peer, media)
        session.calls[page_id] = call
        self._calls[ref] = call
        self.metrics.calls.set(len(self._calls))
        return call

    def _arm_connect_timer(self, call: BrowserCall) -> None:
        loop = asyncio.get_running_loop()

        def expired() -> None:
            call.timer = None
            if not call.connected.is_set() and call.state != "ended":
                log.info("webrtc media did not connect in time", extra={"call": call.ref})
                self._media_failed(call)

        call.timer = loop.call_later(self.config.connect_timeout_s, expired)

    def _media_state(self, ref: str, state: str) -> None:
        call = self._calls.get(ref)
        if call is None:
            return
        if state == "connected":
            call.connected.set()
            if call.timer is not None:
                call.timer.cancel()
                call.timer = None
        elif state in ("failed", "closed") and call.state != "ended":
            self._media_failed(call)

    def _media_failed(self, call: BrowserCall) -> None:
        call.end_reason = "media_failed"
        self.agent.hangup(call.ref)
        if call.state != "ended":  # the agent had nothing to end: finish here
            self._spawn(self._finish(call, "media_failed", 0))

    async def _finish(self, call: BrowserCall, reason: str, status: int) -> None:
        if call.state == "ended" and call.ref not in self._calls:
            return
        call.state = "ended"
        call.connected.set()  # wake an accept waiting for media
        if call.timer is not None:
            call.timer.cancel()
        self._calls.pop(call.ref, None)
        call.session.calls.pop(call.page_id, None)
        self.metrics.calls.set(len(self._calls))
        call.session.post(sig.ended(call.page_id, call.end_reason or reason, status))
        await call.media.close()
        log.info("webrtc call ended", extra={"call": call.ref, "reason": call.end_reason or reason, "status": status})

    # --- the SIP agent's events ------------------------------------------------------------------------------

    def _on_agent_event(self, event: Event) -> None:
        if isinstance(event, RegistrationSucceeded | RegistrationFailed):
            session = self._sessions.get(event.binding)
            ok = isinstance(event, RegistrationSucceeded)
            if session is not None and session.registered is not ok:
                session.registered = ok
                session.post(sig.registered(ok))
            return
        if isinstance(event, IncomingCallReceived):
            self._incoming(event)
            return
        call = self._calls.get(getattr(event, "call", ""))
        if call is None:
            return
        if isinstance(event, CallRinging):
            call.state = "ringing" if call.state == "setup" else call.state
            call.session.post(sig.ringing(call.page_id))
        elif isinstance(event, CallAnswered):
            self._outgoing_answered(call, event.sdp)
        elif isinstance(event, CallFailed):
            self._spawn(self._finish(call, sig.end_reason(event.status), event.status))
        elif isinstance(event, CallEnded):
            reason = sig.end_reason(event.status) if event.by == "remote" else "hangup"
            self._spawn(self._finish(call, reason, event.status))
        elif isinstance(event, OfferReceived):
            try:
                answer = call.media.answer_reoffer(event.sdp)
            except SdpRefused:
                return
            self.agent.answer_offer(call.ref, answer)
            call.session.post(sig.held(call.page_id, "remote", call.media.held))
        elif isinstance(event, OfferAnswered):
            call.session.post(sig.held(call.page_id, "local", call.hold_wanted))
        elif isinstance(event, OfferRefused):
            call.media.held = not call.hold_wanted
            call.hold_wanted = not call.hold_wanted
            call.session.post(sig.error("hold_refused", f"the other side refused ({event.status})", call.page_id))

    def _outgoing_answered(self, call: BrowserCall, sdp: bytes) -> None:
        try:
            plan = plan_from_answer(sdp)
        except SdpRefused as exc:
            log.info("webrtc answer unusable", extra={"call": call.ref, "error": str(exc)})
            call.end_reason = "incompatible"
            self.agent.hangup(call.ref)
            return
        self._media_flows(call, plan)

    def _incoming(self, event: IncomingCallReceived) -> None:
        session = self._sessions.get(event.binding)
        if session is None:
            self.agent.reject(event.call, 480)
            return
        if any(c.state != "ended" for c in session.calls.values()):
            self.agent.reject(event.call, 486)
            return
        try:
            offer = parse_sdp(event.sdp)
        except SdpError:
            self.agent.reject(event.call, 488)
            return
        video = any(m.kind == "video" and m.port != 0 for m in offer.media)
        call = self._new_call(event.call, event.call, session, outgoing=False, peer=event.caller)
        call.sip_offer = event.sdp
        call.state = "ringing"
        self.agent.ring(event.call)
        session.post(sig.incoming(call.page_id, event.caller, event.caller_display, video))
        log.info("webrtc incoming call", extra={"callee": session.user.aor, "caller": event.caller})

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("webrtc task failed", exc_info=task.exception())


async def _refuse(ws: web.WebSocketResponse, code: str, message: str, close_code: int = 4401) -> None:
    await ws.send_str(sig.dump(sig.error(code, message)))
    await ws.close(code=close_code, message=code.encode())
