"""A relay worker process: one :class:`RelayEngine` on its own event loop, driven over a
socketpair by the manager in the main process (protocol: :mod:`media.relay_wire`).

Started by :mod:`media.relay_pool` as ``python -m media.relay_worker FD``. It exits when
told to, or when the manager's end of the socketpair closes (the gateway died), closing
every socket it owns on the way out.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from typing import Any

from media.errors import RelayError
from media.relay_core import LegTimedOut, RelayEvent
from media.relay_engine import PortInUse, RelayEngine
from media.relay_wire import address_from_json, decode, encode, event_to_json, stats_to_json

log = logging.getLogger(__name__)


class _Worker:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._engine: RelayEngine | None = None
        self.stopping = False

    def _send(self, message: dict[str, Any]) -> None:
        self._writer.write(encode(message))

    def _on_event(self, event: RelayEvent) -> None:
        if isinstance(event, LegTimedOut):
            self._send(event_to_json(event))

    def handle(self, message: dict[str, Any]) -> None:
        request_id = message.get("id", 0)
        try:
            result = self._dispatch(message)
        except PortInUse as exc:
            self._send({"id": request_id, "ok": False, "error": str(exc), "port": exc.rtp_port})
        except (RelayError, OSError, KeyError, TypeError, ValueError) as exc:
            self._send({"id": request_id, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        else:
            if request_id:
                self._send({"id": request_id, "ok": True, "result": result})

    def _dispatch(self, m: dict[str, Any]) -> Any:
        op = m["op"]
        if op == "configure":
            self._engine = RelayEngine(
                m["bind_host"],
                m["rtp_timeout_s"],
                self._on_event,
                dscp=m["dscp"],
                socket_rcvbuf=m["socket_rcvbuf"],
            )
            return None
        engine = self._engine
        if engine is None:
            raise RelayError("worker not configured")
        if op == "open":
            engine.open(m["session"], m["port_a"], m["port_b"])
            return None
        if op == "set_remote":
            rtp, rtcp = address_from_json(m["rtp"]), address_from_json(m["rtcp"])
            engine.set_remote(m["session"], m["leg"], rtp, rtcp)
            return None
        if op == "arm_timeout":
            engine.arm_timeout(m["session"])
            return None
        if op == "inject":
            return engine.inject(m["session"], m["leg"], [bytes.fromhex(d) for d in m["datagrams"]])
        if op == "stats":
            return stats_to_json(engine.stats(m["session"]))
        if op == "close":
            return stats_to_json(engine.close(m["session"]))
        if op == "totals":
            return engine.totals().__dict__
        if op == "shutdown":
            engine.close_all()
            self.stopping = True
            return None
        raise RelayError(f"unknown op {op!r}")

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close_all()


async def serve(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    worker = _Worker(writer)
    try:
        while not worker.stopping:
            line = await reader.readline()
            if not line:
                break
            worker.handle(decode(line))
            await writer.drain()
    finally:
        worker.close()
        writer.close()


def main(argv: list[str]) -> int:
    # Ctrl-C is the gateway's to handle; the worker stops when the gateway tells it or dies.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd = int(argv[1])
    use_uvloop = "--uvloop" in argv
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            use_uvloop = False
    if use_uvloop:
        uvloop.run(serve(fd))
    else:
        asyncio.run(serve(fd))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
