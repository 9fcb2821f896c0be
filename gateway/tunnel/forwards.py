"""Static UDP forwards from configuration, for simple services (a PBX's SIP port, a TV multicast relay).

``[[tunnel.forwards]]`` listens on a local UDP port; each distinct sender there gets
its own flow to ``service`` on node ``peer``. ``[[tunnel.services]]`` on that node
sends the flow's datagrams to a fixed UDP target from a fresh local port, so the
target's replies find their way back. A forward's flow closes after
``idle`` seconds without traffic.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.tunnel.config import TunnelForwardConfig, TunnelServiceConfig, parse_endpoint
from gateway.tunnel.errors import FlowRefused
from gateway.tunnel.flows import Flow, UdpBridge
from gateway.tunnel.service import TunnelService
from gateway.tunnel.udp import Address, MediaSocket

log = logging.getLogger("seabridge.tunnel")


class UdpForward:
    def __init__(self, service: TunnelService, config: TunnelForwardConfig, idle: float = 120.0) -> None:
        self.service = service
        self.config = config
        self.idle = idle
        self._flows: dict[Address, Flow] = {}
        self._opening: dict[Address, list[bytes]] = {}
        self._last: dict[Address, float] = {}
        self._sock: MediaSocket | None = None
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        host, port = parse_endpoint(self.config.listen, "listen")
        self._sock = MediaSocket.bind(host, port, self._on_datagram, name=f"forward {self.config.name}")
        self._reaper = asyncio.ensure_future(self._reap())

    @property
    def local_address(self) -> Address:
        assert self._sock is not None
        return self._sock.local_address

    def _on_datagram(self, sock: MediaSocket, data: bytes, addr: Address) -> None:
        self._last[addr] = asyncio.get_running_loop().time()
        flow = self._flows.get(addr)
        if flow is not None and not flow.closed:
            flow.send(data)
            return
        waiting = self._opening.get(addr)
        if waiting is not None:
            if len(waiting) < 64:
                waiting.append(data)
            return
        self._opening[addr] = [data]
        asyncio.ensure_future(self._open(addr))

    async def _open(self, addr: Address) -> None:
        try:
            flow = await self.service.open_flow(
                self.config.peer,
                self.config.service,
                self.config.traffic_class,
                {"forward": self.config.name, "client": f"{addr[0]}:{addr[1]}"},
            )
        except FlowRefused as exc:
            log.warning(
                "forward %s: cannot reach %s on %s: %s",
                self.config.name,
                self.config.service,
                self.config.peer,
                exc,
            )
            self._opening.pop(addr, None)
            return
        sock = self._sock
        if sock is None:
            flow.close("forward stopped")
            return
        flow.set_receiver(lambda data: sock.send(data, addr))
        self._flows[addr] = flow
        for data in self._opening.pop(addr, []):
            flow.send(data)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(self.idle, 10.0))
            now = asyncio.get_running_loop().time()
            for addr, flow in list(self._flows.items()):
                if flow.closed or now - self._last.get(addr, now) > self.idle:
                    flow.close("idle")
                    del self._flows[addr]

    def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for flow in self._flows.values():
            flow.close("forward stopped")
        self._flows.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def serve_udp_target(service: TunnelService, config: TunnelServiceConfig) -> None:
    """Offer ``config.name``: every flow for it is bridged to the UDP target from its own port."""
    host, port = parse_endpoint(config.target, "target")
    wildcard = "::" if ":" in host else "0.0.0.0"
    service.serve(config.name, lambda flow: UdpBridge.open(flow, local=(wildcard, 0), remote=(host, port)))


async def start_forwards(service: TunnelService) -> list[UdpForward]:
    for target in service.config.services:
        serve_udp_target(service, target)
    forwards = [UdpForward(service, f) for f in service.config.forwards]
    for forward in forwards:
        await forward.start()
    return forwards
