"""SIP trunks between gateways through the tunnel (``[[trunks]] tunnel_peer = "hq"``).

Each such trunk gets a UDP socket on this box, and the SIP service sees that socket as
the trunk's peer: the trunk's ``host:port`` are replaced by its address at start-up, so
registration, OPTIONS, IP-identified peering and digest authentication work exactly as
on a plain trunk. What our SIP stack sends to the socket rides a control-class flow
(service ``trunk-sip``, hop-by-hop retransmitted, in order, up to ~21 KB per message) to
the peer gateway, whose glue hands it to its own SIP stack from its socket for the
trunk back to us; answers and requests the other way take the same path.

On the way through, each message is shown to a :class:`TunnelCalls` core and its SDP
rewritten (``gateway.tunnel_sdp``) so the streams name tunnel flows, and
``gateway.tunnel_media`` bridges each stream's voice flow to our relay.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

from gateway.config import TrunkConfig
from gateway.sip.message import Message
from gateway.sip.parser import Limits, SipParseError, parse_message
from gateway.sip.sdp import SdpError, SessionDescription, parse_sdp
from gateway.tunnel.errors import FlowRefused
from gateway.tunnel.flows import Flow
from gateway.tunnel.frame import TrafficClass
from gateway.tunnel.service import TunnelService
from gateway.tunnel.udp import MediaSocket
from gateway.tunnel_calls import CallFinished, Direction, RelayLegDescribed, StreamsOffered, TunnelCalls
from gateway.tunnel_media import TunnelMedia
from gateway.tunnel_sdp import from_tunnel, to_tunnel

log = logging.getLogger("seabridge.tunnel.trunks")

SERVICE = "trunk-sip"
Addr = tuple[str, int]
QUEUE_LIMIT = 64  # messages held while the trunk's flow is being opened


class TrunkChannel:
    """One tunnel trunk: its local socket, its flow(s) to the peer gateway, its calls."""

    def __init__(self, trunk: TrunkConfig, glue: TunnelTrunks, host: str) -> None:
        self.trunk = trunk
        self.peer = trunk.tunnel_peer
        self.calls = TunnelCalls()
        self._glue = glue
        self.sock = MediaSocket.bind(host, 0, self._from_sip, name=f"trunk {trunk.name}", buffer=1 << 20)
        self.sip: Addr | None = None  # our SIP service's UDP address
        self._flows: list[Flow] = []
        self._queue: deque[bytes] = deque(maxlen=QUEUE_LIMIT)
        self._opening = False
        self._unreachable: str | None = None
        self.sent = self.received = self.dropped = 0

    @property
    def local_trunk(self) -> TrunkConfig:
        """The trunk as the SIP service sees it: its peer is our socket."""
        host, port = self.sock.local_address
        return replace(
            self.trunk,
            host=host,
            port=port,
            domain=self.trunk.sip_domain,
            tunnel_peer="",
            rate_inbound=self.trunk.rates_inbound,  # decided by the configured trunk, not the local socket
        )

    @property
    def flow(self) -> Flow | None:
        self._flows = [f for f in self._flows if not f.closed]
        return self._flows[0] if self._flows else None

    def adopt(self, flow: Flow) -> None:
        flow.set_receiver(self._from_peer)
        self._flows.append(flow)
        if self._unreachable is not None:
            log.info("tunnel trunk reachable again", extra={"trunk": self.trunk.name, "peer": self.peer})
            self._unreachable = None
        while self._queue:
            self._send(flow, self._queue.popleft())

    # --- from our SIP stack into the tunnel ---------------------------------------------------

    def _from_sip(self, sock: MediaSocket, data: bytes, addr: Addr) -> None:
        if addr != self.sip:
            self.dropped += 1  # only our own SIP service speaks for this gateway on the trunk
            return
        out = self._glue.passing(self, data, "out")
        flow = self.flow
        if flow is not None:
            self._send(flow, out)
            return
        self._queue.append(out)
        if not self._opening:
            self._opening = True
            self._glue.spawn(self._open())

    def _send(self, flow: Flow, data: bytes) -> None:
        if len(data) > flow.max_datagram:
            log.warning("SIP message too big for the tunnel", extra={"trunk": self.trunk.name, "bytes": len(data)})
            self.dropped += 1
        elif flow.send(data):
            self.sent += 1
        else:
            self.dropped += 1

    async def _open(self) -> None:
        meta = {"trunk": self.trunk.name, "to": self.trunk.tunnel_peer_trunk}
        try:
            flow = await self._glue.service.open_flow(self.peer, SERVICE, TrafficClass.CONTROL, meta)
        except FlowRefused as exc:
            self.dropped += len(self._queue)
            self._queue.clear()
            if self._unreachable != str(exc):
                log.warning(
                    "tunnel trunk unreachable", extra={"trunk": self.trunk.name, "peer": self.peer, "error": str(exc)}
                )
                self._unreachable = str(exc)
            return
        finally:
            self._opening = False
        self.adopt(flow)

    # --- from the peer gateway to our SIP stack ---------------------------------------------------

    def _from_peer(self, data: bytes) -> None:
        self.received += 1
        data = self._glue.passing(self, data, "in")
        if self.sip is not None:
            self.sock.send(data, self.sip)

    def close(self) -> None:
        for flow in self._flows:
            flow.close("gateway stopping")
        self.sock.close()

    def status(self) -> dict[str, object]:
        return {
            "name": self.trunk.name,
            "peer": self.peer,
            "flow": self.flow is not None,
            "calls": len(self.calls),
            "sent": self.sent,
            "received": self.received,
            "dropped": self.dropped,
            "unreachable": self._unreachable,
        }


class TunnelTrunks:
    """Every tunnel trunk of this gateway, the ``trunk-sip`` service, and their calls' media."""

    def __init__(
        self, service: TunnelService, trunks: tuple[TrunkConfig, ...], sip_host: str, media_host: str, idle: float
    ) -> None:
        """``sip_host``/``media_host``: where the trunk sockets and media bridges listen (our SIP
        service and relay must reach them); ``idle``: when a silent call is forgotten."""
        self.service = service
        self._all = trunks
        self._idle = idle
        self.channels = [TrunkChannel(t, self, sip_host) for t in trunks if t.tunnel_peer]
        self.media = TunnelMedia(service, media_host, idle, frozenset(c.peer for c in self.channels))
        self._limits = Limits()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def trunks(self) -> tuple[TrunkConfig, ...]:
        """The configured trunks with each tunnel trunk's peer replaced by its local socket."""
        local = {c.trunk.name: c.local_trunk for c in self.channels}
        return tuple(local.get(t.name, t) for t in self._all)

    def start(self) -> None:
        self.service.serve(SERVICE, self._on_flow)
        self.media.start()
        self.spawn(self._forget_quiet_calls())

    def attach_sip(self, address: Addr) -> None:
        """Where our SIP service listens (UDP): messages from the peers are handed to it from now on."""
        for channel in self.channels:
            channel.sip = address

    async def stop(self) -> None:
        self.service.unserve(SERVICE)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.media.stop()
        for channel in self.channels:
            channel.close()

    def status(self) -> dict[str, object]:
        return {"trunks": [c.status() for c in self.channels], "media": self.media.snapshot()}

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the trunk-sip service -------------------------------------------------------------

    def _on_flow(self, flow: Flow) -> None:
        channel = self._channel_for(flow)
        if channel is None:
            log.warning(
                "refused a SIP trunk flow", extra={"peer": flow.peer, "their_trunk": flow.meta.get("trunk", "")}
            )
            flow.close(f"no trunk to {flow.peer} here")
            return
        channel.adopt(flow)

    def _channel_for(self, flow: Flow) -> TrunkChannel | None:
        """The trunk a peer's flow belongs to: only trunks whose tunnel_peer is that (authenticated) node."""
        candidates = [c for c in self.channels if c.peer == flow.peer]
        wanted, theirs = flow.meta.get("to", ""), flow.meta.get("trunk", "")
        if wanted:
            candidates = [c for c in candidates if c.trunk.name == wanted]
        elif len(candidates) > 1:
            candidates = [c for c in candidates if c.trunk.tunnel_peer_trunk == theirs]
        return candidates[0] if len(candidates) == 1 else None

    # --- every message on its way through ---------------------------------------------------

    def passing(self, channel: TrunkChannel, data: bytes, direction: Direction) -> bytes:
        """Track the message's call, make bridges for its streams, and rewrite its SDP for the other side."""
        try:
            message = parse_message(data, self._limits)
        except SipParseError:
            return data  # not ours to judge: the receiving SIP stack answers it
        sdp = _sdp(message)
        now = asyncio.get_running_loop().time()
        finished: list[CallFinished] = []
        for event in channel.calls.observe(message, sdp, direction, now):
            if isinstance(event, StreamsOffered):
                for stream, kind in zip(event.streams, event.kinds, strict=True):
                    self.media.ensure(channel.peer, event.call_id, event.session_id, stream, event.opener, kind)
            elif isinstance(event, RelayLegDescribed):
                self.media.describe_relay(channel.peer, event.call_id, event.endpoints)
            else:
                finished.append(event)
        if sdp is not None:
            if direction == "out":
                sdp = to_tunnel(sdp)
            else:
                sdp = from_tunnel(sdp, self.media.addresses(channel.peer, message.call_id))
            data = bytes(replace(message, body=bytes(sdp)))
        for event in finished:
            self.media.close_call(channel.peer, event.call_id, event.reason)
        return data

    async def _forget_quiet_calls(self) -> None:
        """Calls that ended without a BYE we saw (a crash, a lost peer): no SIP and no media for ``idle``."""
        while True:
            await asyncio.sleep(min(10.0, self._idle / 2))
            now = asyncio.get_running_loop().time()
            for channel in self.channels:
                for call_id in channel.calls.call_ids():
                    seen = [channel.calls.last_seen(call_id), self.media.last_packet(channel.peer, call_id)]
                    if now - max(t for t in seen if t is not None) > self._idle:
                        event = channel.calls.finish(call_id, "idle")
                        self.media.close_call(channel.peer, event.call_id, event.reason)


def _sdp(message: Message) -> SessionDescription | None:
    if message.content_type != "application/sdp" or not message.body:
        return None
    try:
        return parse_sdp(message.body)
    except SdpError:
        return None
