"""The SIP side's media sockets: an RTP/RTCP port pair (even, odd) per stream, plain UDP.

Symmetric: we send from the port we advertise, so the gateway's relay latches
onto the same address it sends to.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import cast

Addr = tuple[str, int]
Receiver = Callable[[bytes, Addr], None]


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Receiver) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable while the far end is not up yet


class RtpPort:
    def __init__(self, rtp: _Endpoint, rtcp: _Endpoint, port: int) -> None:
        self._rtp = rtp
        self._rtcp = rtcp
        self.port = port
        self.remote: Addr | None = None
        self.packets_out = 0
        self.bytes_out = 0

    def on_rtp(self, receiver: Receiver) -> None:
        self._rtp.on_datagram = receiver

    def on_rtcp(self, receiver: Receiver) -> None:
        self._rtcp.on_datagram = receiver

    def send_rtp(self, data: bytes) -> None:
        if self.remote is not None and self._rtp.transport is not None:
            self._rtp.transport.sendto(data, self.remote)
            self.packets_out += 1
            self.bytes_out += len(data)

    def send_rtcp(self, data: bytes) -> None:
        if self.remote is not None and self._rtcp.transport is not None:
            self._rtcp.transport.sendto(data, (self.remote[0], self.remote[1] + 1))

    def close(self) -> None:
        for endpoint in (self._rtp, self._rtcp):
            if endpoint.transport is not None:
                endpoint.transport.close()


def _ignore(data: bytes, addr: Addr) -> None:
    pass


async def open_rtp_port(address: str, ports: tuple[int, int] | None, attempts: int = 50) -> RtpPort:
    """Bind an even RTP port and the odd RTCP port above it, in ``ports`` (None: anywhere)."""
    loop = asyncio.get_running_loop()
    for _ in range(attempts):
        if ports is None:
            rtp_transport, rtp = await loop.create_datagram_endpoint(
                lambda: _Endpoint(_ignore), local_addr=(address, 0)
            )
            port = rtp_transport.get_extra_info("sockname")[1]
            if port % 2 or port == 65535:
                rtp_transport.close()
                continue
        else:
            port = random.randrange(ports[0] + ports[0] % 2, ports[1], 2)
            try:
                rtp_transport, rtp = await loop.create_datagram_endpoint(
                    lambda: _Endpoint(_ignore), local_addr=(address, port)
                )
            except OSError:
                continue
        try:
            _rtcp_transport, rtcp = await loop.create_datagram_endpoint(
                lambda: _Endpoint(_ignore), local_addr=(address, port + 1)
            )
        except OSError:
            rtp_transport.close()
            continue
        return RtpPort(rtp, rtcp, port)
    raise OSError(f"no free RTP port pair on {address} in {ports or 'the ephemeral range'}")
