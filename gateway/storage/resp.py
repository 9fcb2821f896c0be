"""A lean Redis client: one pipelined connection, RESP2, only what the gateway's stores use.

Why not redis-py: on this machine each of its asyncio commands costs about 130-170 µs of
the caller's CPU (a connection checked out of a pool, a lock, a stream reader per reply),
and a call set-up makes five or six. Here concurrent commands share one connection: each
is written at once and its reply matched by order (Redis answers a connection's commands
in order), so a command costs a write and a little parsing. ``bench/redis_client_bench.py``
measures both clients in the same run.

Scope: commands as argument lists (``execute``), MULTI/EXEC blocks (``transaction``), Lua
scripts by SHA with a fallback to EVAL (``Script``), SCAN iteration. URLs
``redis://[[user]:password@]host[:port][/db]``. A lost connection fails the commands in
flight with ``RedisConnectionError``; the next command reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

log = logging.getLogger("seabridge.redis")


class RedisError(Exception):
    """An error reply from the server (the text Redis sent)."""


class RedisConnectionError(ConnectionError):
    """The connection failed or was lost before the reply came."""


Arg = str | bytes | int | float


def encode_command(args: Sequence[Arg]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


INCOMPLETE = object()


class ReplyParser:
    """RESP2 replies from a byte stream: feed bytes, take whole replies in order."""

    def __init__(self, decode: bool = False) -> None:
        self._buffer = bytearray()
        self._pos = 0
        self._decode = decode

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    def next_reply(self) -> Any:
        """The next whole reply (an error reply is returned as a RedisError), or INCOMPLETE."""
        start = self._pos
        reply = self._parse()
        if reply is INCOMPLETE:
            self._pos = start
        return reply

    def _line(self) -> bytes | None:
        end = self._buffer.find(b"\r\n", self._pos)
        if end < 0:
            return None
        line = bytes(self._buffer[self._pos : end])
        self._pos = end + 2
        return line

    def _parse(self) -> Any:
        line = self._line()
        if line is None:
            return INCOMPLETE
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode() if self._decode else rest
        if kind == b"-":
            return RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            length = int(rest)
            if length < 0:
                return None
            if len(self._buffer) < self._pos + length + 2:
                return INCOMPLETE
            data = bytes(self._buffer[self._pos : self._pos + length])
            self._pos += length + 2
            return data.decode() if self._decode else data
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            items = []
            for _ in range(count):
                item = self._parse()
                if item is INCOMPLETE:
                    return INCOMPLETE
                items.append(item)
            return items
        raise RedisConnectionError(f"not a RESP reply: {line[:40]!r}")


class _Block:
    """The replies of a MULTI ... EXEC block, gathered for one future: EXEC's reply, or the
    first error (one future per block, not one per command and a gather over them)."""

    __slots__ = ("future", "left", "error")

    def __init__(self, future: asyncio.Future[Any], replies: int) -> None:
        self.future = future
        self.left = replies
        self.error: RedisError | None = None

    def reply(self, reply: Any) -> bool:
        """Take the next reply; True once the block is complete."""
        self.left -= 1
        if isinstance(reply, RedisError):
            self.error = self.error or reply
        if self.left:
            return False
        if not self.future.done():
            if self.error is not None:
                self.future.set_exception(self.error)
            elif reply is None:
                self.future.set_exception(RedisError("transaction aborted"))
            else:
                self.future.set_result(reply)
        return True


class _Connection(asyncio.Protocol):
    def __init__(self, decode: bool) -> None:
        self.parser = ReplyParser(decode)
        self.waiting: deque[asyncio.Future[Any] | _Block] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        # Commands of one loop pass, written together when it is over: one system call (and
        # one wake-up of the server, and of us for the replies) for all the calls that
        # asked something meanwhile. Order is kept: replies come back in this order.
        self.unsent: list[bytes] = []

    def queue(self, command: bytes) -> None:
        if not self.unsent:
            asyncio.get_running_loop().call_soon(self._write_unsent)
        self.unsent.append(command)

    def _write_unsent(self) -> None:
        unsent, self.unsent = self.unsent, []
        if self.transport is not None and self.lost is None:
            self.transport.write(b"".join(unsent))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        parser.feed(data)
        while self.waiting:
            try:
                reply = parser.next_reply()
            except RedisConnectionError as exc:
                assert self.transport is not None
                self.transport.close()
                self._fail(exc)
                return
            if reply is INCOMPLETE:
                return
            future = self.waiting[0]
            if type(future) is _Block:
                if future.reply(reply):
                    self.waiting.popleft()
                continue
            self.waiting.popleft()
            assert not isinstance(future, _Block)
            if future.done():
                continue  # its caller was cancelled; the reply still had to be read
            if isinstance(reply, RedisError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed by the server'}"))

    def _fail(self, exc: Exception) -> None:
        self.lost = exc
        while self.waiting:
            waiter = self.waiting.popleft()
            future = waiter.future if isinstance(waiter, _Block) else waiter
            if not future.done():
                future.set_exception(exc)


class Script:
    """A Lua script run by its SHA1 (EVALSHA), loaded with EVAL when the server lacks it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class _Address:
    """Where a ``redis://[[user]:password@]host[:port][/db]`` URL points, and how to log in."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r} (redis://host:port/db)")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.username = unquote(parts.username) if parts.username else ""
        self.password = unquote(parts.password) if parts.password else ""
        path = parts.path.strip("/")
        self.db = int(path) if path else 0

    def auth(self) -> list[Arg] | None:
        if not self.password:
            return None
        return ["AUTH", self.username, self.password] if self.username else ["AUTH", self.password]


class RespClient:
    def __init__(self, url: str, decode: bool = False) -> None:
        self._address = _Address(url)
        self._decode = decode
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.lost is None:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
            try:
                self._conn = await asyncio.shield(self._connecting)
            finally:
                self._connecting = None
            return self._conn
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        address = self._address
        try:
            _, conn = await loop.create_connection(lambda: _Connection(self._decode), address.host, address.port)
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis at {address.host}:{address.port}: {exc}") from None
        hello: list[list[Arg]] = []
        auth = address.auth()
        if auth is not None:
            hello.append(auth)
        if address.db:
            hello.append(["SELECT", address.db])
        try:
            for command in hello:
                await self._send(conn, command)
        except BaseException:
            assert conn.transport is not None
            conn.transport.close()
            raise
        return conn

    @staticmethod
    def _send(conn: _Connection, args: Sequence[Arg]) -> asyncio.Future[Any]:
        if conn.lost is not None or conn.transport is None:
            raise RedisConnectionError(str(conn.lost or "not connected"))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        conn.waiting.append(future)
        conn.queue(encode_command(args))
        return future

    async def execute(self, *args: Arg) -> Any:
        conn = await self._connection()
        return await self._send(conn, args)

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """The commands written together, each reply in order: an error reply is returned as
        its RedisError, not raised (unlike ``transaction``, one failing does not undo others)."""
        conn = await self._connection()
        futures = [self._send(conn, command) for command in commands]
        replies: list[Any] = []
        for future in futures:
            try:
                replies.append(await future)
            except RedisError as exc:
                replies.append(exc)
        return replies

    async def transaction(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """MULTI, the commands, EXEC: written in one go; the EXEC reply is the commands' replies."""
        conn = await self._connection()
        if conn.lost is not None or conn.transport is None:
            raise RedisConnectionError(str(conn.lost or "not connected"))
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        # +OK, +QUEUED per command (an error there makes EXEC fail too), then EXEC's array.
        conn.waiting.append(_Block(future, len(commands) + 2))
        conn.queue(b"".join(encode_command(c) for c in (["MULTI"], *commands, ["EXEC"])))
        return await future

    async def run_script(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except RedisError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    async def scan_iter(self, match: str, count: int = 500) -> AsyncIterator[Any]:
        cursor: Any = "0"
        while True:
            cursor, keys = await self.execute("SCAN", cursor, "MATCH", match, "COUNT", count)
            for key in keys:
                yield key
            if cursor in (b"0", "0"):
                return

    async def aclose(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            conn.transport.close()


class RespSubscriber:
    """One connection in SUBSCRIBE mode: each message published on ``channel`` goes to
    ``on_message``. ``on_state(True)`` once subscribed; ``on_state(False)`` when the
    connection is lost or cannot be made (messages published meanwhile are missed: the
    caller must not trust what they would have told it). It reconnects by itself."""

    def __init__(
        self,
        url: str,
        channel: str,
        on_message: Callable[[bytes], None],
        on_state: Callable[[bool], None],
        retry_s: float = 1.0,
    ) -> None:
        self._address = _Address(url)
        self._channel = channel
        self._on_message = on_message
        self._on_state = on_state
        self._retry_s = retry_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self._session()
            except (OSError, RedisError, RedisConnectionError) as exc:
                log.warning("redis subscription lost", extra={"channel": self._channel, "error": str(exc)})
            self._on_state(False)
            await asyncio.sleep(self._retry_s)

    async def _session(self) -> None:
        reader, writer = await asyncio.open_connection(self._address.host, self._address.port)
        parser = ReplyParser()

        async def reply() -> Any:
            while (answer := parser.next_reply()) is INCOMPLETE:
                data = await reader.read(65536)
                if not data:
                    raise RedisConnectionError("connection to Redis closed by the server")
                parser.feed(data)
            if isinstance(answer, RedisError):
                raise answer
            return answer

        try:
            auth = self._address.auth()
            if auth is not None:
                writer.write(encode_command(auth))
                await reply()
            writer.write(encode_command(["SUBSCRIBE", self._channel]))
            await reply()
            self._on_state(True)
            while True:
                message = await reply()
                if isinstance(message, list) and len(message) == 3 and message[0] == b"message":
                    self._on_message(message[2])
        finally:
            writer.close()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
