"""Point reads from a SQLite database straight on the event loop's thread.

Writes go through ``SqliteDatabase``'s own thread because a commit waits for the disk.
A read by primary key in WAL mode does not: it is served from the page cache and never
waits for a writer, and runs in microseconds, where a hop to the database thread and back
costs the event loop far more (a future, a thread wake-up, the GIL handed back and forth).
The SIP service makes several such lookups per call (caller, callee), so they come here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from gateway.storage.sqlite import SqliteDatabase, read_transaction

T = TypeVar("T")


class SqliteReader:
    """A read-only connection to ``db``'s file, opened on first use by the thread that uses it."""

    def __init__(self, db: SqliteDatabase, busy_timeout_ms: int = 100) -> None:
        self._db = db
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None

    async def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            await self._db.run(lambda conn: None)  # the writer creates the file and schema first
            conn = sqlite3.connect(f"file:{self._db.path}?mode=ro", uri=True, isolation_level=None)
            # Readers in WAL mode wait only in rare recovery cases; never long on the loop.
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            self._conn = conn
        return self._conn

    async def fetch_one(self, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = (await self._connection()).execute(sql, args).fetchone()
        return row

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in one read transaction: several statements see one snapshot."""
        return read_transaction(await self._connection(), fn)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
