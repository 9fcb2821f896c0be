"""One peer's link at run time: its media core, its control connection, its path addresses."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from gateway.tunnel.config import TunnelPeerConfig
from gateway.tunnel.controlconn import ControlConnection
from gateway.tunnel.link import LinkCore
from gateway.tunnel.udp import Address, MediaSocket

log = logging.getLogger("seabridge.tunnel")


@dataclass
class PathEndpoint:
    sock: MediaSocket
    addr: Address | None


class PeerLink:
    def __init__(self, config: TunnelPeerConfig, core: LinkCore) -> None:
        self.config = config
        self.name = config.name
        self.core = core
        self.control: ControlConnection | None = None
        self.peer_epoch: str | None = None
        self.hello_received = False
        self.endpoints: dict[str, PathEndpoint] = {}
        # Sockets bound for this link alone (dialled paths); closed with it. Listen sockets are shared.
        self.sockets: list[MediaSocket] = []
        self.dialer: asyncio.Task[None] | None = None
        self._by_source: dict[tuple[int, Address], str] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None
        self.connects = 0
        self.refusals = 0
        self.last_error = ""
        # Set while the control channel is up and media keys are in place.
        self.ready = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self.control is not None and self.control.ready and self.hello_received

    def set_endpoint(self, path: str, sock: MediaSocket, addr: Address | None) -> None:
        old = self.endpoints.get(path)
        if old is not None and old.addr is not None:
            self._by_source.pop((id(old.sock), old.addr), None)
        self.endpoints[path] = PathEndpoint(sock, addr)
        if addr is not None:
            self._by_source[(id(sock), addr)] = path

    def learn(self, path: str, source: object) -> None:
        if not isinstance(source, tuple) or len(source) != 2:
            return
        sock, addr = source
        if not isinstance(sock, MediaSocket):
            return
        current = self.endpoints.get(path)
        if current is None or current.sock is not sock or current.addr != addr:
            if current is None or current.addr is None or not self._configured(path):
                log.info("link %s: path %s is at %s:%s", self.name, path, addr[0], addr[1])
                self.set_endpoint(path, sock, addr)

    def _configured(self, path: str) -> bool:
        return any(p.name == path and p.address for p in self.config.paths)

    def path_of(self, sock: MediaSocket, addr: Address) -> str | None:
        return self._by_source.get((id(sock), addr))

    def transmit(self) -> None:
        for path, frame in self.core.transmit():
            endpoint = self.endpoints.get(path)
            if endpoint is not None and endpoint.addr is not None:
                endpoint.sock.send(frame, endpoint.addr)
