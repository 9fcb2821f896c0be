"""A minimal async SQL interface that SQLite and PostgreSQL both satisfy.

The billing store writes its SQL once, in the common subset of both dialects
(``?`` placeholders, ``ON CONFLICT DO NOTHING``, ``RETURNING``, row values),
as transaction bodies: ``await db.run(body)`` runs ``body(tx)`` as one
transaction, committed on success and rolled back on error. PostgreSQL runs it
on an asyncpg connection, translating placeholders to ``$n``. SQLite runs the
whole body on the database's own thread in one hop: its ``Tx`` does the work
synchronously, so the body's coroutine completes without ever suspending, and a
transaction costs one wake-up of the event loop however many statements it has.
Its write transactions are group-committed with whatever other writes are queued
at the same time (one fsync for all, each in its own savepoint).

A body must await nothing but its ``Tx``, and must not keep it after returning.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gateway.storage.sqlite import SqliteDatabase, read_transaction
from gateway.storage.sqlite_reader import SqliteReader

Row = tuple[Any, ...]
T = TypeVar("T")


class Tx(Protocol):
    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...


Body = Callable[[Tx], Coroutine[Any, Any, T]]


class Database(Protocol):
    name: str

    async def run(self, body: Body[T], *, write: bool = True, quick: bool = False, linger_s: float = 0.0) -> T:
        """Run ``body(tx)`` as one transaction (read-only unless ``write``); its result.

        ``quick``: a read of a few rows by key, on the hot path of every call; an engine
        may serve it without leaving the event loop's thread. ``linger_s``: a write that may
        wait that long to share another write's commit (still durable when this returns)."""
        ...

    async def read_row(self, sql: str, *args: Any) -> Row | None:
        """One read-only statement (one snapshot, no transaction around it): its first row.
        For the hot path's single-statement reads; an engine may serve it on the loop's thread."""
        ...

    async def close(self) -> None: ...


class SqliteBodyError(RuntimeError):
    """A transaction body awaited something other than its Tx."""


class _SqliteTx:
    """Statements run at once on the database thread's connection (the body runs there too)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        return self._conn.execute(sql, args).rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [tuple(r) for r in self._conn.execute(sql, args).fetchall()]


def _complete(body: Body[T], conn: sqlite3.Connection) -> T:
    """Run ``body`` to completion on this thread: with a synchronous Tx it never suspends."""
    coro = body(_SqliteTx(conn))
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise SqliteBodyError("a SQLite transaction body may await only its Tx")


class SqliteBillingDatabase:
    """The embedded database under data_dir, used from its one thread (writes serialised there)."""

    name = "sqlite"

    def __init__(self, path: Path, schema: str) -> None:
        self._db = SqliteDatabase(path, schema)
        self._reader = SqliteReader(self._db)

    @property
    def sqlite(self) -> SqliteDatabase:
        return self._db

    async def run(self, body: Body[T], *, write: bool = True, quick: bool = False, linger_s: float = 0.0) -> T:
        if quick and not write:
            # WAL readers never wait for the writer: a few key lookups cost less here than
            # the hop to the database thread and back (see gateway/storage/sqlite_reader.py).
            return await self._reader.read(lambda c: _complete(body, c))
        if write:
            # Grouped: writes queued together share one commit (one fsync), each in its own
            # savepoint, and every caller's future resolves only after that commit.
            return await self._db.run_grouped(lambda c: _complete(body, c), linger_s)
        # A read transaction, so a multi-statement read sees one snapshot even while another
        # process (the CLI) writes; it costs no fsync.
        return await self._db.run(lambda c: read_transaction(c, lambda c2: _complete(body, c2)))

    async def read_row(self, sql: str, *args: Any) -> Row | None:
        # Autocommit: the statement is its own read transaction (BEGIN and COMMIT around it
        # would be two more statements on the loop).
        row = await self._reader.fetch_one(sql, args)
        return None if row is None else tuple(row)

    def run_sync(self, fn: Any) -> Any:
        return self._db.run_sync(fn)

    async def close(self) -> None:
        self._reader.close()
        await asyncio.get_running_loop().run_in_executor(None, self._db.close)


_PLACEHOLDER = re.compile(r"\?")


def to_dollar(sql: str) -> str:
    """'? ... ?' -> '$1 ... $2' (our SQL has no '?' inside literals)."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _m: f"${next(counter)}", sql)


class _PgTx:
    def __init__(self, conn: Any, cache: dict[str, str]) -> None:
        self._conn = conn
        self._cache = cache

    def _sql(self, sql: str) -> str:
        out = self._cache.get(sql)
        if out is None:
            out = self._cache[sql] = to_dollar(sql)
        return out

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self._conn.execute(self._sql(sql), *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.executemany(self._sql(sql), rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [tuple(r) for r in await self._conn.fetch(self._sql(sql), *args)]


class PostgresBillingDatabase:
    name = "postgresql"

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._cache: dict[str, str] = {}

    @classmethod
    async def connect(cls, dsn: str, schema: str) -> PostgresBillingDatabase:
        import asyncpg

        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=8)
        async with pool.acquire() as conn:
            # Several gateways may start at once against one server: serialise the DDL.
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(7270135)")
                for statement in schema.split(";"):
                    if statement.strip():
                        await conn.execute(statement)
        return cls(pool)

    @asynccontextmanager
    async def transaction(self, write: bool = True) -> AsyncIterator[_PgTx]:
        async with self._pool.acquire() as conn, conn.transaction(readonly=not write):
            yield _PgTx(conn, self._cache)

    async def run(self, body: Body[T], *, write: bool = True, quick: bool = False, linger_s: float = 0.0) -> T:
        async with self.transaction(write) as tx:
            return await body(tx)

    async def read_row(self, sql: str, *args: Any) -> Row | None:
        query = self._cache.get(sql)
        if query is None:
            query = self._cache[sql] = to_dollar(sql)
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(query, *args)
        return None if row is None else tuple(row)

    async def close(self) -> None:
        await self._pool.close()
