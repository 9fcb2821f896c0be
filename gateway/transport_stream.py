"""SIP over TCP and TLS: listening, connection reuse, idle timeouts.

Connections are keyed by the far end's (transport, address, port): a phone that
registered over TLS is reached back over its own connection (it is usually
behind NAT and would not accept a new one), and a request to a peer we have no
connection to opens one. Framing is the sans-I/O StreamFramer's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable

from gateway.errors import StartupError
from gateway.sip.peer import Peer
from gateway.sip.stream import FramingError, KeepAlivePing, StreamFramer

log = logging.getLogger("seabridge.sip.stream")


class _Connection(asyncio.Protocol):
    def __init__(self, owner: StreamTransport, peer: Peer | None) -> None:
        self._owner = owner
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.framer = StreamFramer(owner.max_message_bytes)
        self.last_activity = time.monotonic()
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.peer is None:
            host, port = transport.get_extra_info("peername")[:2]
            self.peer = Peer(str(host), int(port), self._owner.name)
        self._owner._opened(self)
        for data in self.pending:
            self.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        try:
            frames = self.framer.feed(data)
        except FramingError as exc:
            log.info("closing unframeable connection", extra={"peer": str(self.peer), "error": str(exc)})
            self.close()
            return
        assert self.peer is not None
        for frame in frames:
            if isinstance(frame, KeepAlivePing):
                self.write(b"\r\n")
            else:
                self._owner._on_message(frame, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._closed(self)

    def write(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if self.transport is None:
            self.pending.append(data)
        elif not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class StreamTransport:
    def __init__(
        self,
        name: str,
        on_message: Callable[[bytes, Peer], None],
        on_failure: Callable[[Peer], None],
        *,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        idle_timeout: float = 600.0,
        max_message_bytes: int = 65535,
        connect_timeout: float = 10.0,
    ) -> None:
        self.name = name  # "TCP" or "TLS"
        self._on_message = on_message
        self._on_failure = on_failure
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self.idle_timeout = idle_timeout
        self.max_message_bytes = max_message_bytes
        self.connect_timeout = connect_timeout
        self._connections: dict[Peer, _Connection] = {}
        self._connecting: dict[Peer, _Connection] = {}
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Connection(self, None), host, port, ssl=self._server_ssl, reuse_address=True
            )
        except OSError as exc:
            where = f"{self.name.lower()} {host}:{port}"
            raise StartupError(f"cannot listen for SIP on {where}: {exc.strerror or exc}") from None
        self._sweeper = asyncio.create_task(self._sweep())

    @property
    def local_port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def has_connection(self, peer: Peer) -> bool:
        return peer in self._connections

    def send(self, data: bytes, peer: Peer) -> None:
        conn = self._connections.get(peer) or self._connecting.get(peer)
        if conn is None:
            conn = _Connection(self, peer)
            self._connecting[peer] = conn
            task = asyncio.ensure_future(self._connect(conn, peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        conn.write(data)

    async def _connect(self, conn: _Connection, peer: Peer) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: conn,
                    peer.host,
                    peer.port,
                    ssl=self._client_ssl if self.name == "TLS" else None,
                    server_hostname=peer.host if self.name == "TLS" else None,
                ),
                self.connect_timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self._connecting.pop(peer, None)
            log.info("cannot connect", extra={"peer": str(peer), "error": str(exc)})
            self._on_failure(peer)

    def _opened(self, conn: _Connection) -> None:
        assert conn.peer is not None
        self._connecting.pop(conn.peer, None)
        old = self._connections.get(conn.peer)
        if old is not None and old is not conn:
            old.close()
        self._connections[conn.peer] = conn

    def _closed(self, conn: _Connection) -> None:
        if conn.peer is not None and self._connections.get(conn.peer) is conn:
            del self._connections[conn.peer]

    async def _sweep(self) -> None:
        """Close connections idle for longer than the read timeout."""
        while True:
            await asyncio.sleep(max(1.0, self.idle_timeout / 4))
            cutoff = time.monotonic() - self.idle_timeout
            for conn in list(self._connections.values()):
                if conn.last_activity < cutoff:
                    log.info("closing idle connection", extra={"peer": str(conn.peer)})
                    conn.close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._connections.values()) + list(self._connecting.values()):
            conn.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
