"""The control channel's asyncio transport: TCP bytes in and out of a ``TlsSession``.

One asyncio Protocol per connection; it feeds the TLS core, decodes control
messages and hands them to its owner. It knows nothing of links or keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from gateway.tunnel import control
from gateway.tunnel.errors import PeerRefused, TunnelError
from gateway.tunnel.tls import TlsSession

log = logging.getLogger("seabridge.tunnel")


class ControlConnection(asyncio.Protocol):
    def __init__(
        self,
        tls: TlsSession,
        on_ready: Callable[[ControlConnection], None],
        on_message: Callable[[ControlConnection, control.ControlMessage], None],
        on_lost: Callable[[ControlConnection, str], None],
        label: str,
    ) -> None:
        self.tls = tls
        self._on_ready = on_ready
        self._on_message = on_message
        self._on_lost = on_lost
        self.label = label
        self._decoder = control.ControlDecoder()
        self.transport: asyncio.Transport | None = None
        self.ready = False
        self.closed = False
        self.last_rx = asyncio.get_running_loop().time()
        self.path: str | None = None  # which path a dialled connection runs on
        self.refused = False  # the peer's certificate or identity was not accepted
        loop = asyncio.get_running_loop()
        # Set by the owner when the peer's Hello arrives / when the connection ends, with the reason.
        self.established: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[str] = loop.create_future()

    @property
    def peer(self) -> str | None:
        return self.tls.peer_node

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport (what `seabridge run` uses) is not an asyncio.Transport subclass.
        self.transport = cast(asyncio.Transport, transport)
        self.tls.start()
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.last_rx = asyncio.get_running_loop().time()
        try:
            self.tls.receive(data)
            self._flush()
            if self.tls.handshake_done and not self.ready:
                self.ready = True
                self._on_ready(self)
            plain = self.tls.received_data()
            if plain:
                for message in self._decoder.feed(plain):
                    if self.closed:
                        return
                    self._on_message(self, message)
            if self.tls.closed:
                self.close("peer closed the control channel")
        except PeerRefused as exc:
            self.refused = True
            self.close(exc.reason)
        except TunnelError as exc:
            self.close(str(exc))

    def send(self, message: control.ControlMessage) -> None:
        if self.closed or not self.ready:
            return
        self.tls.send(control.encode(message))
        self._flush()

    def _flush(self) -> None:
        out = self.tls.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self.ready:
            self.tls.close()
            self._flush()
        if self.transport is not None:
            self.transport.close()
        self._on_lost(self, reason)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(f"connection lost ({exc})" if exc else "connection closed")

    def eof_received(self) -> bool | None:
        self.close("peer closed the connection")
        return None
