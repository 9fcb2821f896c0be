"""Asyncio AMI client: the thin I/O layer around ``AmiSession``.

It connects, feeds the session, keeps one ``loop.call_at`` timer, and reconnects on its own
with back-off whenever the connection fails, times out or Asterisk restarts. Typed events go
to listeners (plain callables, called on the loop; keep them quick). Actions are awaited;
an action in flight when the connection drops fails with ``AmiNotConnected`` and is never
re-sent (an Originate sent twice rings a phone twice).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

from gateway.clock import Clock, SystemClock
from gateway.pbx.ami_events import OriginateFinished, PbxEvent
from gateway.pbx.ami_session import (
    ActionCompleted,
    ActionFailed,
    AmiSession,
    ConnectionTimedOut,
    LoggedIn,
    LoginRefused,
    SessionSettings,
)
from gateway.pbx.backoff import Backoff
from gateway.pbx.errors import AmiActionFailed, AmiNotConnected, AmiProtocolError

log = logging.getLogger("seabridge.pbx.ami")


@dataclass(frozen=True)
class AmiConnected:
    """Logged in (again): listeners that mirror PBX state should resynchronise now."""

    protocol_version: str


@dataclass(frozen=True)
class AmiDisconnected:
    reason: str
    retry_in: float


ClientEvent = PbxEvent | AmiConnected | AmiDisconnected


@dataclass(frozen=True)
class OriginateTicket:
    action_id: str
    finished: asyncio.Future[OriginateFinished]


Listener = Callable[[ClientEvent], None]


@dataclass(frozen=True)
class AmiEndpoint:
    host: str
    port: int
    username: str
    secret: str
    tls: ssl.SSLContext | None = None
    connect_timeout: float = 10.0


class _Protocol(asyncio.Protocol):
    def __init__(self, client: AmiClient, session: AmiSession) -> None:
        self.client = client
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport subclass, but behaves as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.session.receive_data(data, self.client.clock.monotonic())
        except AmiProtocolError as exc:
            self.abort(f"protocol error: {exc}")
            return
        self.client._pump(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._connection_lost(self)
        if not self.closed.done():
            self.closed.set_result(str(exc) if exc else "closed by Asterisk")

    def abort(self, reason: str) -> None:
        if not self.closed.done():
            self.closed.set_result(reason)
        if self.transport is not None:
            self.transport.abort()


class AmiClient:
    def __init__(
        self,
        endpoint: AmiEndpoint,
        *,
        settings: SessionSettings | None = None,
        backoff: Backoff | None = None,
        clock: Clock | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.endpoint = endpoint
        self.settings = settings or SessionSettings()
        self.backoff = backoff or Backoff()
        self.clock = clock or SystemClock()
        self._rand = rand
        self._listeners: list[Listener] = []
        self._waiters: dict[str, asyncio.Future[ActionCompleted]] = {}
        self._originates: dict[str, asyncio.Future[OriginateFinished]] = {}
        self._proto: _Protocol | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.connects = 0  # successful logins since start, for the status API and tests

    # --- public -------------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ami-client")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._proto is not None:
            self._proto.abort("client closed")

    @property
    def ready(self) -> bool:
        return self._proto is not None and self._proto.session.ready

    async def wait_ready(self) -> None:
        """Until logged in; wrap in ``asyncio.timeout`` to bound it."""
        await self._ready.wait()

    async def action(
        self, action: str, fields: Iterable[tuple[str, str]] = (), answer_within: float | None = None
    ) -> ActionCompleted:
        """Send one action and wait for its answer (and its event list, if it has one).

        ``answer_within`` (default: the session's action_timeout) is how long Asterisk has.
        """
        action_id, future = self._send(action, fields, answer_within)
        self._waiters[action_id] = future
        return await future

    async def originate(self, fields: Iterable[tuple[str, str]]) -> OriginateTicket:
        """Send an asynchronous Originate; returns once Asterisk has accepted it.

        ``ticket.finished`` resolves when Asterisk reports how the first leg ended (answered,
        busy, no answer), which takes up to the Originate's ``Timeout``.
        """
        finished: asyncio.Future[OriginateFinished] = asyncio.get_running_loop().create_future()
        # Nobody may wait for the outcome (the HTTP API answers at once): never leave an
        # exception unretrieved.
        finished.add_done_callback(lambda f: f.cancelled() or f.exception())
        action_id, accepted = self._send("Originate", [*fields, ("Async", "true")], None)
        self._waiters[action_id] = accepted
        self._originates[action_id] = finished
        try:
            await accepted
        except BaseException:
            self._originates.pop(action_id, None)
            finished.cancel()
            raise
        return OriginateTicket(action_id, finished)

    # --- connection loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            reason = await self._connect_once(loop)
            self._ready.clear()
            delay = self.backoff.next_delay(self._rand())
            log.warning("AMI connection lost", extra={"reason": reason, "retry_in_s": round(delay, 2)})
            self._emit(AmiDisconnected(reason, delay))
            await asyncio.sleep(delay)  # the back-off between attempts, not a wait for an event

    async def _connect_once(self, loop: asyncio.AbstractEventLoop) -> str:
        ep = self.endpoint
        session = AmiSession(ep.username, ep.secret, self.clock.monotonic(), self.settings)
        try:
            async with asyncio.timeout(ep.connect_timeout):
                _, proto = await loop.create_connection(lambda: _Protocol(self, session), ep.host, ep.port, ssl=ep.tls)
        except (OSError, TimeoutError) as exc:
            return f"connect to {ep.host}:{ep.port} failed: {exc or type(exc).__name__}"
        self._proto = proto
        self._arm_timer(proto)
        try:
            return await proto.closed
        finally:
            proto.abort("done")
            self._proto = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _send(
        self, action: str, fields: Iterable[tuple[str, str]], timeout: float | None
    ) -> tuple[str, asyncio.Future[ActionCompleted]]:
        proto = self._proto
        if proto is None or not proto.session.ready:
            raise AmiNotConnected("not logged in to AMI (reconnecting)")
        action_id = proto.session.send_action(action, fields, self.clock.monotonic(), timeout)
        future: asyncio.Future[ActionCompleted] = asyncio.get_running_loop().create_future()
        self._pump(proto)
        return action_id, future

    def _pump(self, proto: _Protocol) -> None:
        """Write what the session wants sent, act on its events, re-arm its timer."""
        data = proto.session.data_to_send()
        if data and proto.transport is not None and not proto.transport.is_closing():
            proto.transport.write(data)
        while (event := proto.session.next_event()) is not None:
            if isinstance(event, LoggedIn):
                self.connects += 1
                self.backoff.reset()
                self._ready.set()
                log.info("AMI logged in", extra={"host": self.endpoint.host, "ami_version": event.protocol_version})
                self._emit(AmiConnected(event.protocol_version))
            elif isinstance(event, LoginRefused):
                log.error("AMI login refused", extra={"user": self.endpoint.username, "reason": event.message})
                proto.abort(f"login refused: {event.message}")
            elif isinstance(event, ConnectionTimedOut):
                proto.abort(f"no answer to {event.waiting_for}")
            elif isinstance(event, ActionCompleted | ActionFailed):
                self._answer(event)
            else:
                if isinstance(event, OriginateFinished):
                    waiter = self._originates.pop(event.action_id, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(event)
                self._emit(event)
        self._arm_timer(proto)

    def _answer(self, event: ActionCompleted | ActionFailed) -> None:
        future = self._waiters.pop(event.action_id, None)
        if future is None or future.done():
            return
        if isinstance(event, ActionCompleted):
            future.set_result(event)
        else:
            future.set_exception(AmiActionFailed(event.action, event.message))

    def _arm_timer(self, proto: _Protocol) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = proto.session.get_timer()
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        # The session's clock and the loop's may differ: convert the delay, not the instant.
        delay = max(0.0, deadline - self.clock.monotonic())
        self._timer = loop.call_at(loop.time() + delay, self._on_timer, proto)

    def _on_timer(self, proto: _Protocol) -> None:
        self._timer = None
        proto.session.handle_timer(self.clock.monotonic())
        self._pump(proto)

    def _connection_lost(self, proto: _Protocol) -> None:
        for failed in proto.session.connection_lost():
            future = self._waiters.pop(failed.action_id, None)
            if future is not None and not future.done():
                future.set_exception(AmiNotConnected(failed.message))
        for action_id, waiter in list(self._originates.items()):
            if not waiter.done():
                waiter.set_exception(AmiNotConnected("AMI connection lost before the originate finished"))
            self._originates.pop(action_id, None)

    def _emit(self, event: ClientEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # one broken listener must not stop the others or the connection
                log.exception("AMI listener failed", extra={"event": type(event).__name__})
