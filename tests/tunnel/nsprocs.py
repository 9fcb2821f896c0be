"""Real gateways and phones inside network namespaces, driven from the test process.

Each program runs under ``ip netns exec``. The test reaches their loopback-only control
ports (baresip's ctrl_tcp, the gateway's HTTP API) with sockets created inside the
namespace: a short-lived thread enters it with setns(2), makes and connects the socket,
and hands it back; a socket keeps its namespace for life, whichever thread uses it.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

from tests.support.baresip import Baresip
from tests.support.gateway import GatewayProcess

CLONE_NEWNET = 0x40000000


def connect_in(ns: str, host: str, port: int, timeout: float = 2.0) -> socket.socket:
    """A TCP socket connected to ``host:port`` as seen from inside namespace ``ns``."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            finally:
                os.close(fd)
            result["sock"] = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, name=f"netns-{ns}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    sock: socket.socket = result["sock"]
    sock.setblocking(False)
    return sock


async def open_connection_in(ns: str, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio streams over ``connect_in``; a caller cancelled mid-connect leaks no socket."""
    future = asyncio.get_running_loop().run_in_executor(None, connect_in, ns, host, port)
    try:
        sock = await asyncio.shield(future)
    except asyncio.CancelledError:
        # The thread cannot be stopped: close what it connects once it is done.
        future.add_done_callback(_close_connected)
        raise
    try:
        return await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise


def _close_connected(future: asyncio.Future[socket.socket]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


async def http_get_json(ns: str, port: int, path: str, token: str = "") -> tuple[int, Any]:
    """GET a JSON document from a server on the namespace's loopback (HTTP/1.0, one request per connection)."""
    reader, writer = await open_connection_in(ns, "127.0.0.1", port)
    try:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode())
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else None


@dataclass
class NsGateway(GatewayProcess):
    """`seabridge run` inside a namespace; its HTTP API reached from inside that namespace."""

    netns: str = ""

    def _command_prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.netns)

    async def wait_healthy(self, timeout: float = 30.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            assert self.process is not None
            if self.process.returncode is not None:
                raise RuntimeError(f"gateway exited {self.process.returncode}: {self.log_tail()}")
            try:
                status, body = await http_get_json(self.netns, self.http_port, "/health")
            except OSError:
                status, body = 0, None
            if status == 200:
                return dict(body)
            await asyncio.sleep(0.1)
        raise RuntimeError(f"gateway not healthy within {timeout}s: {self.log_tail()}")

    async def api(self, path: str, token: str) -> Any:
        status, body = await http_get_json(self.netns, self.http_port, path, token)
        assert status == 200, (status, body)
        return body


@dataclass
class NsBaresip(Baresip):
    """baresip inside a namespace, its ctrl_tcp port reached from inside that namespace."""

    netns: str = ""

    def _command_prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.netns)

    async def _open_control(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await open_connection_in(self.netns, "127.0.0.1", self.ctrl_port)
