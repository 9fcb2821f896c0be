"""Grouped commits: writes queued together share a transaction, failures stay isolated."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gateway.storage.sqlite import SqliteDatabase


async def test_grouped_writes_commit_together_and_fail_alone(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "t.db", "CREATE TABLE t (k INTEGER PRIMARY KEY);")
    try:

        def insert(k: int):  # type: ignore[no-untyped-def]
            return lambda conn: conn.execute("INSERT INTO t VALUES (?)", (k,)).rowcount

        results = await asyncio.gather(*(db.run_grouped(insert(k)) for k in (1, 2, 2, 3)), return_exceptions=True)
        assert results[0] == 1 and results[1] == 1 and results[3] == 1
        assert isinstance(results[2], sqlite3.IntegrityError)  # the duplicate failed on its own
        rows = await db.run(lambda conn: [r[0] for r in conn.execute("SELECT k FROM t ORDER BY k")])
        assert rows == [1, 2, 3]
    finally:
        db.close()
    with pytest.raises(RuntimeError):
        await db.run(lambda conn: 1)


async def test_a_lone_grouped_write_that_fails_leaves_nothing_and_the_next_one_commits(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "t.db", "CREATE TABLE t (k INTEGER PRIMARY KEY);")
    try:

        def half_then_fail(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t VALUES (7)")
            raise ValueError("after a write")

        with pytest.raises(ValueError):
            await db.run_grouped(half_then_fail)
        assert await db.run_grouped(lambda conn: conn.execute("INSERT INTO t VALUES (8)").rowcount) == 1
        rows = await db.run(lambda conn: [r[0] for r in conn.execute("SELECT k FROM t ORDER BY k")])
        assert rows == [8]  # the failed job's own insert was rolled back with it
        assert await db.run(lambda conn: conn.in_transaction) is False
    finally:
        db.close()
