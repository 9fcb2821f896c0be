"""The I/O shell of the browser sessions' SIP user agent: one UDP socket, one timer.

Feeds datagrams and the timer to ``sip_ua.UserAgent``, sends what it queues,
and hands its events to one callback. Nothing here decides anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from gateway.clock import Clock
from gateway.transport_udp import UdpTransport, open_udp
from gateway.webrtc.sip_ua import Account, AgentSettings, Event, UserAgent

Addr = tuple[str, int]
log = logging.getLogger("seabridge.webrtc.sip")


class SipAgent:
    def __init__(self, settings: AgentSettings, clock: Clock, on_event: Callable[[Event], None]) -> None:
        self._settings = settings
        self._clock = clock
        self._on_event = on_event
        self._ua: UserAgent | None = None
        self._transport: UdpTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    async def start(self, bind: str, port: int) -> Addr:
        self._transport = await open_udp(bind, port, self._datagram)
        local = self._transport.local_address
        host = f"[{local[0]}]" if ":" in local[0] else local[0]
        self._ua = UserAgent(replace(self._settings, local_host=f"{host}:{local[1]}"))
        log.info("webrtc sip agent listening", extra={"udp": f"{local[0]}:{local[1]}"})
        return local

    @property
    def ua(self) -> UserAgent:
        assert self._ua is not None, "start() the agent first"
        return self._ua

    @property
    def local_address(self) -> Addr:
        assert self._transport is not None
        return self._transport.local_address

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()

    # --- the API, each call followed by flushing and re-arming -------------------------------------

    def register(self, binding: str, account: Account, contact_user: str) -> None:
        self._run(lambda now: self.ua.register(binding, account, contact_user, now))

    def unregister(self, binding: str) -> None:
        self._run(lambda now: self.ua.unregister(binding, now))

    def invite(self, ref: str, binding: str, target: str, sdp: bytes, session_id: str | None = None) -> None:
        self._run(lambda now: self.ua.invite(ref, binding, target, sdp, now, session_id))

    def ring(self, ref: str) -> None:
        self._run(lambda now: self.ua.ring(ref, now))

    def answer(self, ref: str, sdp: bytes) -> None:
        self._run(lambda now: self.ua.answer(ref, sdp, now))

    def reject(self, ref: str, status: int) -> None:
        self._run(lambda now: self.ua.reject(ref, status, now))

    def hangup(self, ref: str) -> None:
        self._run(lambda now: self.ua.hangup(ref, now))

    def reoffer(self, ref: str, sdp: bytes) -> None:
        self._run(lambda now: self.ua.reoffer(ref, sdp, now))

    def answer_offer(self, ref: str, sdp: bytes) -> None:
        self._run(lambda now: self.ua.answer_offer(ref, sdp, now))

    # --- plumbing ------------------------------------------------------------------------------

    def _run(self, step: Callable[[float], list[Event]]) -> None:
        now = self._clock.monotonic()
        events = step(now)
        self._flush(now)
        for event in events:
            try:
                self._on_event(event)
            except Exception:
                log.exception("webrtc sip event handler failed", extra={"event": type(event).__name__})

    def _datagram(self, data: bytes, source: Addr) -> None:
        if self._ua is not None:
            self._run(lambda now: self.ua.receive(data, source, now))

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._run(lambda now: self.ua.handle_timers(now))

    def _flush(self, now: float) -> None:
        if self._transport is None or self._ua is None:
            return
        for data, destination in self._ua.take_outgoing():
            self._transport.send(data, destination)
        when = self._ua.next_deadline()
        if when is None or (self._timer_at is not None and self._timer_at <= when):
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = when
        self._timer = loop.call_at(loop.time() + max(0.0, when - now), self._on_timer)
