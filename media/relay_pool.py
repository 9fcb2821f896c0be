"""The manager's side of the relay worker processes: spawns them, shards sessions over
them (each session lives wholly in one worker, which owns its four sockets), and turns
the async API calls into control messages (:mod:`media.relay_wire`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from media.errors import RelayError
from media.relay_config import RelayConfig
from media.relay_core import Address, LegName, RelayEvent, SessionLost, SessionStats
from media.relay_engine import PortInUse, RelayTotals
from media.relay_wire import decode, encode, event_from_json, stats_from_json, totals_from_json

log = logging.getLogger(__name__)

_SHUTDOWN_GRACE_S = 5.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def _address_to_json(address: Address | None) -> list[Any] | None:
    return None if address is None else list(address)


class _WorkerProcess:
    def __init__(self, index: int, on_event: Callable[[RelayEvent], None]) -> None:
        self.index = index
        self.sessions: set[str] = set()
        self._on_event = on_event
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self.alive = False
        self._stopping = False

    async def start(self, config: RelayConfig) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # The worker imports this package: make sure it finds the same copy we run.
        env = dict(os.environ)
        root = _PACKAGE_ROOT
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
        argv = [sys.executable, "-m", "media.relay_worker", str(child.fileno())]
        if config.worker_uvloop:
            argv.append("--uvloop")
        try:
            self._process = await asyncio.create_subprocess_exec(*argv, pass_fds=(child.fileno(),), env=env)
        finally:
            child.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=parent)
        self.alive = True
        self._reader_task = asyncio.create_task(self._read(reader), name=f"relay-worker-{self.index}")
        await self.request(
            "configure",
            bind_host=config.bind_host,
            rtp_timeout_s=config.rtp_timeout_s,
            dscp=config.dscp,
            socket_rcvbuf=config.socket_rcvbuf,
        )

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                self._dispatch(decode(line))
        except (ConnectionError, RelayError) as exc:
            log.error("relay worker %d: control channel failed: %s", self.index, exc)
        finally:
            self._lost()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "event" in message:
            self._on_event(event_from_json(message))
            return
        future = self._pending.pop(message.get("id", 0), None)
        if future is None:
            if not message.get("ok", True):
                log.error("relay worker %d: %s", self.index, message.get("error"))
            return
        if future.done():
            return
        if message.get("ok"):
            future.set_result(message.get("result"))
        elif "port" in message:
            future.set_exception(PortInUse(int(message["port"])))
        else:
            future.set_exception(RelayError(f"relay worker {self.index}: {message.get('error')}"))

    def _lost(self) -> None:
        was_alive, self.alive = self.alive and not self._stopping, False
        error = RelayError(f"relay worker {self.index} exited")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        if was_alive:
            for session_id in sorted(self.sessions):
                self._on_event(SessionLost(session_id, str(error)))
        self.sessions.clear()

    async def request(self, op: str, **fields: Any) -> Any:
        if not self.alive or self._writer is None:
            raise RelayError(f"relay worker {self.index} is not running")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._writer.write(encode({"id": request_id, "op": op, **fields}))
        await self._writer.drain()
        return await future

    async def stop(self) -> None:
        self._stopping = True
        if self.alive:
            try:
                await asyncio.wait_for(self.request("shutdown"), _SHUTDOWN_GRACE_S)
            except (RelayError, TimeoutError, ConnectionError) as exc:
                log.warning("relay worker %d did not shut down cleanly: %s", self.index, exc)
        self.alive = False
        if self._writer is not None:
            self._writer.close()
        process = self._process
        if process is not None and process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), _SHUTDOWN_GRACE_S)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._reader_task is not None:
            await self._reader_task


class WorkerPool:
    """The multi-process backend of :class:`media.relay.RelayManager`."""

    def __init__(self, config: RelayConfig, on_event: Callable[[RelayEvent], None]) -> None:
        self._config = config
        self._workers = [_WorkerProcess(i, on_event) for i in range(config.workers)]
        self._where: dict[str, _WorkerProcess] = {}

    @property
    def pids(self) -> list[int]:
        return [w._process.pid for w in self._workers if w._process is not None]

    async def start(self) -> None:
        try:
            await asyncio.gather(*(w.start(self._config) for w in self._workers))
        except BaseException:
            await self.aclose()
            raise

    def _worker(self, session_id: str) -> _WorkerProcess:
        worker = self._where.get(session_id)
        if worker is None or session_id not in worker.sessions:
            raise RelayError(f"no media session {session_id!r}")
        return worker

    async def open(self, session_id: str, port_a: int, port_b: int) -> None:
        alive = [w for w in self._workers if w.alive]
        if not alive:
            raise RelayError("no relay worker is running")
        worker = min(alive, key=lambda w: len(w.sessions))
        await worker.request("open", session=session_id, port_a=port_a, port_b=port_b)
        worker.sessions.add(session_id)
        self._where[session_id] = worker

    async def set_remote(self, session_id: str, leg: LegName, rtp: Address | None, rtcp: Address | None) -> None:
        await self._worker(session_id).request(
            "set_remote", session=session_id, leg=leg, rtp=_address_to_json(rtp), rtcp=_address_to_json(rtcp)
        )

    def set_remote_now(self, session_id: str, leg: LegName, rtp: Address | None, rtcp: Address | None) -> bool:
        return False  # a worker process has to be asked

    async def arm_timeout(self, session_id: str) -> None:
        await self._worker(session_id).request("arm_timeout", session=session_id)

    async def inject(self, session_id: str, leg: LegName, datagrams: list[bytes]) -> int:
        sent = await self._worker(session_id).request(
            "inject", session=session_id, leg=leg, datagrams=[d.hex() for d in datagrams]
        )
        return int(sent)

    async def stats(self, session_id: str) -> SessionStats:
        return stats_from_json(await self._worker(session_id).request("stats", session=session_id))

    async def close(self, session_id: str) -> SessionStats:
        worker = self._worker(session_id)
        try:
            return stats_from_json(await worker.request("close", session=session_id))
        finally:
            worker.sessions.discard(session_id)
            self._where.pop(session_id, None)

    async def totals(self) -> RelayTotals:
        total = RelayTotals(0, 0, 0, 0, 0)
        for worker in self._workers:
            if worker.alive:
                total += totals_from_json(await worker.request("totals"))
        return total

    async def aclose(self) -> None:
        await asyncio.gather(*(w.stop() for w in self._workers))
        self._where.clear()
