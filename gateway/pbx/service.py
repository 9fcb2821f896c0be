"""The PBX integration wired together: AMI client events -> call records, presence, security logs.

Built once by the application (``build_pbx_service``) and handed to the HTTP routes. The cores
(CallCorrelator, PresenceBook, security_record) make every decision; this module only routes
events to them, stamps ``now``, and does the I/O their results need.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from gateway.cdr import CallRecord
from gateway.clock import Clock, SystemClock, WallAnchor
from gateway.pbx.ami import AmiClient, AmiConnected, AmiDisconnected, AmiEndpoint, ClientEvent, OriginateTicket
from gateway.pbx.ami_events import (
    DeviceStateChanged,
    ExtensionStateChanged,
    OriginateFinished,
    SecurityEventReported,
    channel_info,
    parse_event,
)
from gateway.pbx.ami_session import SessionSettings
from gateway.pbx.backoff import Backoff
from gateway.pbx.calls import CallCorrelator, PbxCallEnded, PbxCallRecord, TrunkBinding
from gateway.pbx.click_to_call import ClickToCall, OriginatePlan, originate_fields
from gateway.pbx.config import PbxConfig
from gateway.pbx.errors import PbxError
from gateway.pbx.presence import ExtensionPresence, PresenceBook, PresenceChanged
from gateway.pbx.records import to_call_record
from gateway.pbx.security import log_security_event, security_record

log = logging.getLogger("seabridge.pbx")
security_log = logging.getLogger("seabridge.security")

RecordSink = Callable[[CallRecord], Awaitable[object]]
PresenceListener = Callable[[PresenceChanged], None]


@dataclass(frozen=True)
class ClickToCallStarted:
    session_id: str
    ticket: OriginateTicket


class PbxService:
    def __init__(
        self,
        config: PbxConfig,
        client: AmiClient,
        *,
        node: str,
        record_sink: RecordSink,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.node = node
        self.clock = clock or SystemClock()
        self._sink = record_sink
        binding = TrunkBinding(config.trunk_endpoint, config.trunk_account, config.tenant, config.site)
        self.correlator = CallCorrelator([binding], config.session_variable)
        self.presence = PresenceBook(config.presence_contexts)
        self._presence_listeners: list[PresenceListener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.records_written = 0
        client.add_listener(self._on_event)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.client.start()

    async def close(self) -> None:
        await self.client.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self) -> None:
        """Wait until every record handed to the sink so far is written (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- API for the HTTP layer and the SIP service -------------------------------------------

    def add_presence_listener(self, listener: PresenceListener) -> None:
        """Called on every extension state change (e.g. to send NOTIFYs to subscribed phones)."""
        self._presence_listeners.append(listener)

    def extensions(self) -> list[ExtensionPresence]:
        return self.presence.snapshot()

    def status(self) -> dict[str, object]:
        return {
            "ami_connected": self.client.ready,
            "ami_logins": self.client.connects,
            "open_calls": self.correlator.open_calls,
            "records_written": self.records_written,
        }

    async def click_to_call(self, call: ClickToCall) -> ClickToCallStarted:
        cfg = self.config
        plan = OriginatePlan(cfg.hq_context, cfg.site_dial_prefix, cfg.ring_timeout_s, cfg.session_variable)
        session_id = uuid.uuid4().hex
        ticket = await self.client.originate(originate_fields(call, plan, session_id))
        log.info("click-to-call queued", extra={"session": session_id, "from": call.from_extension, "to": call.to})
        ticket.finished.add_done_callback(lambda f: self._log_originate(session_id, f))
        return ClickToCallStarted(session_id, ticket)

    # --- events ---------------------------------------------------------------------------------

    def _on_event(self, event: ClientEvent) -> None:
        now = self.clock.monotonic()
        if isinstance(event, AmiConnected):
            self._spawn(self._resync())
        elif isinstance(event, AmiDisconnected):
            self._publish(self.presence.on_disconnected(now))
        elif isinstance(event, SecurityEventReported):
            log_security_event(security_log, security_record(event))
        elif isinstance(event, ExtensionStateChanged):
            change = self.presence.on_extension_status(event.exten, event.context, event.hint, event.status, now)
            self._publish([change])
        elif isinstance(event, DeviceStateChanged):
            self._publish([self.presence.on_device_state(event.device, event.state, now)])
        else:
            self._records(self.correlator.on_event(event, now))

    async def _resync(self) -> None:
        """After (re)connecting: learn the channels and extension states we may have missed."""
        try:
            channels = await self.client.action("CoreShowChannels")
            now = self.clock.monotonic()
            live = [c for c in (channel_info(m) for m in channels.events) if c is not None]
            self._records(self.correlator.resync(live, now))
            states = await self.client.action("ExtensionStateList")
            now = self.clock.monotonic()
            for msg in states.events:
                ev = parse_event(msg)
                if isinstance(ev, ExtensionStateChanged):
                    self._publish([self.presence.on_extension_status(ev.exten, ev.context, ev.hint, ev.status, now)])
        except PbxError as exc:  # the connection dropped again: the next AmiConnected retries
            log.warning("PBX resync failed", extra={"error": str(exc)})

    def _records(self, ended: list[PbxCallEnded]) -> None:
        for item in ended:
            self._spawn(self._write(item.record))

    async def _write(self, record: PbxCallRecord) -> None:
        anchor = WallAnchor(self.clock.monotonic(), self.clock.wall())
        row = to_call_record(record, anchor, self.node)
        try:
            await self._sink(row)
        except Exception:
            log.exception("PBX call record not stored", extra={"session": record.session_id})
            return
        self.records_written += 1
        log.info(
            "PBX call ended",
            extra={
                "session": record.session_id,
                "direction": record.direction,
                "disposition": record.disposition,
                "account": record.account,
                "incomplete": record.incomplete,
            },
        )

    def _publish(self, changes: Sequence[PresenceChanged | None]) -> None:
        for change in changes:
            if change is None:
                continue
            for listener in self._presence_listeners:
                try:
                    listener(change)
                except Exception:  # a subscriber's failure must not stop presence for others
                    log.exception("presence listener failed")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _log_originate(session_id: str, finished: asyncio.Future[OriginateFinished]) -> None:
        if finished.cancelled():
            return
        exc = finished.exception()
        result = finished.result() if exc is None else None
        log.info(
            "click-to-call finished",
            extra={"session": session_id, "outcome": str(exc) if exc else repr(result)},
        )


def build_pbx_service(
    config: PbxConfig,
    *,
    secret: str,
    node: str,
    record_sink: RecordSink,
    tls: ssl.SSLContext | None = None,
    clock: Clock | None = None,
) -> PbxService:
    """The one place a PBX service is built from configuration (``secret``: config or secrets store)."""
    endpoint = AmiEndpoint(config.ami_host, config.ami_port, config.ami_username, secret, tls)
    settings = SessionSettings(ping_interval=float(config.ami_ping_interval_s))
    client = AmiClient(endpoint, settings=settings, backoff=Backoff(maximum=float(config.reconnect_max_s)), clock=clock)
    return PbxService(config, client, node=node, record_sink=record_sink, clock=clock)
