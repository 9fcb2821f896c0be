"""The application's handle on a flow, and a bridge from a flow to a local UDP socket.

A ``Flow`` is a two-way datagram channel to a service on another gateway. Sending
never blocks (a datagram the tunnel cannot carry now is dropped, as UDP would);
received datagrams go to the callback set with ``set_receiver`` or, when none is
set, into a bounded queue read with ``await recv()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from gateway.tunnel.errors import TunnelError
from gateway.tunnel.frame import TrafficClass
from gateway.tunnel.routing import FlowKey
from gateway.tunnel.udp import Address, MediaSocket

if TYPE_CHECKING:
    from gateway.tunnel.service import TunnelService


class FlowClosedError(TunnelError):
    """The flow was closed (by either end, a hub, or a restart); ``reason`` says why."""


class Flow:
    def __init__(
        self,
        service: TunnelService,
        key: FlowKey,
        peer: str,
        service_name: str,
        traffic_class: TrafficClass,
        meta: Mapping[str, str],
        max_datagram: int,
    ) -> None:
        self._service = service
        self.key = key
        self.peer = peer
        self.service = service_name
        self.traffic_class = traffic_class
        self.meta = meta
        self.max_datagram = max_datagram
        self._receiver: Callable[[bytes], None] | None = None
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1024)
        self._closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.sent = 0
        self.received = 0
        self.dropped = 0

    def __repr__(self) -> str:
        return f"<Flow {self.service} {self.traffic_class.name.lower()} with {self.peer} via {self.key}>"

    @property
    def closed(self) -> bool:
        return self._closed.done()

    def send(self, data: bytes) -> bool:
        """Send one datagram (at most ``max_datagram`` bytes); False if it was dropped."""
        if self.closed:
            return False
        ok = self._service._send_on_flow(self.key, data)
        if ok:
            self.sent += 1
        else:
            self.dropped += 1
        return ok

    def set_receiver(self, callback: Callable[[bytes], None] | None) -> None:
        self._receiver = callback
        while callback is not None and not self._queue.empty():
            callback(self._queue.get_nowait())

    async def recv(self) -> bytes:
        if self._queue.empty() and self.closed:
            raise FlowClosedError(self._closed.result())
        getter = asyncio.ensure_future(self._queue.get())
        waiting: set[asyncio.Future[Any]] = {getter, self._closed}
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        raise FlowClosedError(self._closed.result())

    def close(self, reason: str = "closed by application") -> None:
        if not self.closed:
            self._service._close_flow(self.key, reason)

    async def wait_closed(self) -> str:
        return await asyncio.shield(self._closed)

    # -- called by the service

    def _deliver(self, data: bytes) -> None:
        self.received += 1
        if self._receiver is not None:
            self._receiver(data)
        elif self._queue.full():
            self.dropped += 1
        else:
            self._queue.put_nowait(data)

    def _mark_closed(self, reason: str) -> None:
        if not self._closed.done():
            self._closed.set_result(reason)


class UdpBridge:
    """Joins a flow to a local UDP socket: what arrives on the socket goes into the flow and back.

    With ``remote`` unset, replies go to whoever last sent to the socket (a phone or
    player on this side); set it to send to a fixed target (a PBX, a TV source).
    """

    def __init__(self, flow: Flow, sock: MediaSocket | None, remote: Address | None) -> None:
        self.flow = flow
        self.remote = remote
        self._learn = remote is None
        self._sock = sock
        flow.set_receiver(self._from_flow)

    @classmethod
    def open(cls, flow: Flow, local: Address = ("127.0.0.1", 0), remote: Address | None = None) -> UdpBridge:
        bridge = cls(flow, None, remote)
        bridge._sock = MediaSocket.bind(local[0], local[1], bridge._from_socket, name=f"bridge:{flow.service}")
        asyncio.ensure_future(bridge._close_with_flow())
        return bridge

    @property
    def local_address(self) -> Address:
        assert self._sock is not None
        return self._sock.local_address

    def _from_socket(self, sock: MediaSocket, data: bytes, addr: Address) -> None:
        if self._learn:
            self.remote = addr
        self.flow.send(data)

    def _from_flow(self, data: bytes) -> None:
        if self.remote is not None and self._sock is not None:
            self._sock.send(data, self.remote)

    async def _close_with_flow(self) -> None:
        await self.flow.wait_closed()
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.flow.close("bridge closed")
