"""RTP of calls over tunnel trunks: one voice flow per media stream, bridged to the local relay.

Each stream of a call that crosses a tunnel trunk gets a :class:`StreamBridge` on both
gateways: an RTP/RTCP socket pair on this box (the address our relay's trunk-facing leg
is told to send to, see ``gateway.tunnel_sdp``) joined to one voice-class flow. The
gateway that sent the INVITE opens the flow (service ``trunk-rtp``, meta ``session``,
``call``, ``stream``); the other accepts it here and joins it to the bridge for the same
call and stream, whichever of the flow and the SDP arrives first. RTP and RTCP share the
flow and are told apart as RFC 5761 does (RTCP packet types 192-223).

Bridges close with their call (BYE, failed INVITE), when the far end closes the flow, or
after ``idle`` seconds without a packet (a call that vanished without BYE).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Coroutine, Mapping
from typing import Any

from gateway.tunnel.errors import FlowRefused, TunnelError
from gateway.tunnel.flows import Flow
from gateway.tunnel.frame import TrafficClass
from gateway.tunnel.service import TunnelService
from gateway.tunnel.udp import MediaSocket, Receiver

log = logging.getLogger("seabridge.tunnel.media")

SERVICE = "trunk-rtp"
Addr = tuple[str, int]
StreamKey = tuple[str, str, int]  # (peer node, Call-ID, stream)


class TunnelMediaError(TunnelError):
    """No local socket pair for a bridge (ports exhausted)."""


def is_rtcp(datagram: bytes) -> bool:
    return len(datagram) > 1 and 192 <= datagram[1] <= 223


class StreamBridge:
    def __init__(self, key: StreamKey, session_id: str, host: str, now: float) -> None:
        self.key = key
        self.session_id = session_id
        self.rtp, self.rtcp = _bind_pair(host, self._from_relay_rtp, self._from_relay_rtcp)
        self.relay: Addr | None = None  # our relay leg's RTP address (RTCP: the next port)
        self.flow: Flow | None = None
        self.created = self.last_packet = now
        self.closed = False
        self.to_tunnel = 0
        self.from_tunnel = 0
        self.dropped = 0  # from a local source that is not our relay leg

    @property
    def local_address(self) -> Addr:
        return self.rtp.local_address

    def attach(self, flow: Flow) -> None:
        if self.flow is not None and not self.flow.closed:
            flow.close("duplicate flow for a stream")
            return
        self.flow = flow
        flow.set_receiver(self._from_flow)

    def _from_relay(self, data: bytes, addr: Addr, port_offset: int) -> None:
        if self.relay is None:
            self.relay = (addr[0], addr[1] - port_offset)
        elif addr[1] != self.relay[1] + port_offset:
            self.dropped += 1
            return
        self.last_packet = asyncio.get_running_loop().time()
        if self.flow is not None and self.flow.send(data):
            self.to_tunnel += 1

    def _from_relay_rtp(self, sock: MediaSocket, data: bytes, addr: Addr) -> None:
        self._from_relay(data, addr, 0)

    def _from_relay_rtcp(self, sock: MediaSocket, data: bytes, addr: Addr) -> None:
        self._from_relay(data, addr, 1)

    def _from_flow(self, data: bytes) -> None:
        self.last_packet = asyncio.get_running_loop().time()
        self.from_tunnel += 1
        relay = self.relay
        if relay is None:
            return
        if is_rtcp(data):
            self.rtcp.send(data, (relay[0], relay[1] + 1))
        else:
            self.rtp.send(data, relay)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.rtp.close()
        self.rtcp.close()
        if self.flow is not None:
            self.flow.close(reason)


def _bind_pair(host: str, on_rtp: Receiver, on_rtcp: Receiver) -> tuple[MediaSocket, MediaSocket]:
    """An even RTP port and the RTCP port above it: the relay sends RTCP to the RTP port + 1."""
    for _ in range(64):
        rtp = MediaSocket.bind(host, 0, on_rtp, name="bridge rtp", buffer=256 << 10)
        port = rtp.local_address[1]
        if port % 2 == 0:
            try:
                rtcp = MediaSocket.bind(host, port + 1, on_rtcp, name="bridge rtcp", buffer=64 << 10)
            except OSError:
                pass
            else:
                return rtp, rtcp
        rtp.close()
    raise TunnelMediaError(f"no free RTP/RTCP port pair on {host}")


class TunnelMedia:
    """Every stream bridge of this gateway, and the ``trunk-rtp`` service that accepts flows."""

    def __init__(
        self,
        service: TunnelService,
        host: str,
        idle: float,
        peers: frozenset[str],
        max_bridges: int = 4096,
        open_within: float = 10.0,
    ) -> None:
        self._service = service
        self._host = host
        self._idle = idle
        self._peers = peers
        self._max = max_bridges
        self._open_within = open_within
        self._bridges: dict[StreamKey, StreamBridge] = {}
        self._closed_calls: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self.flows_opened = 0
        self.flows_accepted = 0

    def start(self) -> None:
        self._service.serve(SERVICE, self._on_flow)
        self._reaper = asyncio.ensure_future(self._reap())

    async def stop(self) -> None:
        self._service.unserve(SERVICE)
        tasks = [*self._tasks, *([self._reaper] if self._reaper is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for bridge in list(self._bridges.values()):
            bridge.close("gateway stopping")
        self._bridges.clear()

    def __len__(self) -> int:
        return len(self._bridges)

    # --- driven by the trunk glue ---------------------------------------------------------

    def ensure(
        self, peer: str, call_id: str, session_id: str, stream: int, opener: bool, kind: str = "audio"
    ) -> StreamBridge | None:
        """The bridge for a stream, made (and, by the opener, its flow opened) on first sight."""
        key = (peer, call_id, stream)
        bridge = self._bridges.get(key)
        if bridge is not None or (peer, call_id) in self._closed_calls:
            return bridge
        bridge = self._make(key, session_id)
        if bridge is not None and opener:
            self._spawn(self._open(bridge, TrafficClass.VIDEO if kind == "video" else TrafficClass.VOICE))
        return bridge

    def describe_relay(self, peer: str, call_id: str, endpoints: tuple[tuple[int, Addr], ...]) -> None:
        """Our relay leg's ports, from the SDP our SIP service sent. Only the port is taken: the
        relay is on this box, where the bridge's own address reaches it (the advertised address
        in the SDP may be a NAT's, unreachable from here)."""
        for stream, (_, port) in endpoints:
            bridge = self._bridges.get((peer, call_id, stream))
            if bridge is not None:
                bridge.relay = (self._host, port)

    def addresses(self, peer: str, call_id: str) -> Mapping[int, Addr]:
        return {k[2]: b.local_address for k, b in self._bridges.items() if k[0] == peer and k[1] == call_id}

    def last_packet(self, peer: str, call_id: str) -> float | None:
        times = [b.last_packet for k, b in self._bridges.items() if k[0] == peer and k[1] == call_id]
        return max(times) if times else None

    def close_call(self, peer: str, call_id: str, reason: str) -> None:
        self._closed_calls[(peer, call_id)] = None
        while len(self._closed_calls) > 4096:
            self._closed_calls.popitem(last=False)
        for key in [k for k in self._bridges if k[0] == peer and k[1] == call_id]:
            self._drop(key, reason)

    def snapshot(self) -> list[dict[str, object]]:
        return [
            {
                "peer": k[0],
                "call_id": k[1],
                "stream": k[2],
                "session_id": b.session_id,
                "local": f"{b.local_address[0]}:{b.local_address[1]}",
                "flow": b.flow is not None and not b.flow.closed,
                "to_tunnel": b.to_tunnel,
                "from_tunnel": b.from_tunnel,
                "dropped": b.dropped,
            }
            for k, b in self._bridges.items()
        ]

    # --- flows ---------------------------------------------------------------------------

    def _make(self, key: StreamKey, session_id: str) -> StreamBridge | None:
        if len(self._bridges) >= self._max:
            log.warning("too many tunnel media streams; not bridging", extra={"peer": key[0], "call": key[1]})
            return None
        try:
            bridge = StreamBridge(key, session_id, self._host, asyncio.get_running_loop().time())
        except (TunnelMediaError, OSError) as exc:
            log.error("cannot bridge a stream to the tunnel", extra={"call": key[1], "error": str(exc)})
            return None
        self._bridges[key] = bridge
        return bridge

    async def _open(self, bridge: StreamBridge, traffic_class: TrafficClass) -> None:
        peer, call_id, stream = bridge.key
        meta = {"session": bridge.session_id, "call": call_id, "stream": str(stream)}
        try:
            flow = await self._service.open_flow(peer, SERVICE, traffic_class, meta, self._open_within)
        except FlowRefused as exc:
            log.warning(
                "no tunnel flow for a call's media",
                extra={"peer": peer, "session": bridge.session_id, "error": str(exc)},
            )
            return
        if bridge.closed:
            flow.close("call already over")
            return
        self.flows_opened += 1
        self._watch(bridge, flow)

    def _on_flow(self, flow: Flow) -> None:
        call_id, stream = flow.meta.get("call", ""), flow.meta.get("stream", "")
        if flow.peer not in self._peers or not call_id or not stream.isdigit():
            flow.close("not a media stream of a trunk to this gateway")
            return
        if (flow.peer, call_id) in self._closed_calls:
            flow.close("call already over")
            return
        key = (flow.peer, call_id, int(stream))
        bridge = self._bridges.get(key) or self._make(key, flow.meta.get("session", ""))
        if bridge is None:
            flow.close("no media bridge available")
            return
        self.flows_accepted += 1
        self._watch(bridge, flow)

    def _watch(self, bridge: StreamBridge, flow: Flow) -> None:
        bridge.attach(flow)
        if bridge.flow is flow:
            self._spawn(self._close_with(bridge, flow))

    async def _close_with(self, bridge: StreamBridge, flow: Flow) -> None:
        reason = await flow.wait_closed()
        if self._bridges.get(bridge.key) is bridge:
            self._drop(bridge.key, f"flow closed: {reason}")

    def _drop(self, key: StreamKey, reason: str) -> None:
        bridge = self._bridges.pop(key, None)
        if bridge is not None:
            bridge.close(reason)
            log.info(
                "tunnel media stream closed",
                extra={"peer": key[0], "session": bridge.session_id, "stream": key[2], "reason": reason,
                       "to_tunnel": bridge.to_tunnel, "from_tunnel": bridge.from_tunnel},
            )  # fmt: skip

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(10.0, self._idle / 2))
            now = asyncio.get_running_loop().time()
            for key, bridge in list(self._bridges.items()):
                if now - bridge.last_packet > self._idle:
                    self._drop(key, "idle")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def loopback_for(bind: str) -> str:
    """Where bridges listen: the relay's own address, or loopback when it binds every interface."""
    if bind in ("0.0.0.0", ""):
        return "127.0.0.1"
    if bind == "::":
        return "::1"
    return bind


__all__ = ["SERVICE", "StreamBridge", "TunnelMedia", "TunnelMediaError", "is_rtcp", "loopback_for"]
