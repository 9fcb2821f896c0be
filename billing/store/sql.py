"""A minimal async SQL interface that SQLite and PostgreSQL both satisfy.

The billing store writes its SQL once, in the common subset of both dialects
(``?`` placeholders, ``ON CONFLICT DO NOTHING``, ``RETURNING``, row values),
and runs it through a ``Database``: the SQLite one runs each statement on the
database's own thread, the PostgreSQL one translates placeholders to ``$n`` and
uses an asyncpg pool. Every read and write happens inside ``transaction()``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from gateway.storage.sqlite import SqliteDatabase

Row = tuple[Any, ...]


class Tx(Protocol):
    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...


class Database(Protocol):
    name: str

    def transaction(self, write: bool = True) -> AbstractAsyncContextManager[Tx]:
        """``async with db.transaction() as tx:`` commits on success, rolls back on error."""
        ...

    async def close(self) -> None: ...


class _SqliteTx:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._db.run(lambda c: c.execute(sql, args).rowcount)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._db.run(lambda c: c.executemany(sql, rows))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._db.run(lambda c: [tuple(r) for r in c.execute(sql, args).fetchall()])


class SqliteBillingDatabase:
    """The embedded database under data_dir; one writer at a time, as SQLite wants."""

    name = "sqlite"

    def __init__(self, path: Path, schema: str) -> None:
        self._db = SqliteDatabase(path, schema)
        # Statements of one transaction run as separate hops to the database thread;
        # the lock keeps another coroutine's statements out of the middle of ours.
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self, write: bool = True) -> AsyncIterator[_SqliteTx]:
        async with self._lock:
            tx = _SqliteTx(self._db)
            if not write:
                # Reads run in autocommit: with the lock held no write can come between them,
                # and a round trip to the database thread for BEGIN and COMMIT is saved.
                yield tx
                return
            await self._db.run(lambda c: c.execute("BEGIN IMMEDIATE"))
            try:
                yield tx
            except BaseException:
                await self._db.run(lambda c: c.execute("ROLLBACK"))
                raise
            await self._db.run(lambda c: c.execute("COMMIT"))

    def run_sync(self, fn: Any) -> Any:
        return self._db.run_sync(fn)

    async def close(self) -> None:
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

    async def close(self) -> None:
        await self._pool.close()
