"""Grouped commits: writes queued together share a transaction, failures stay isolated."""

from __future__ import annotations

import asyncio
import os
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


def _committed(path: Path) -> list[int]:
    """What another connection sees: only committed rows."""
    with sqlite3.connect(path) as other:
        return [r[0] for r in other.execute("SELECT k FROM t ORDER BY k")]


async def test_a_lingering_write_rides_along_with_the_next_write_commit(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    db = SqliteDatabase(path, "CREATE TABLE t (k INTEGER PRIMARY KEY);")
    try:
        await db.run(lambda conn: None)  # the schema exists before the thread is kept busy
        seen: list[list[int]] = []

        def eager(conn: sqlite3.Connection) -> int:
            seen.append(_committed(path))  # from inside the shared transaction, before its commit
            return conn.execute("INSERT INTO t VALUES (2)").rowcount

        # A long linger: only the eager write, or the end of the linger, can commit it.
        lingering = asyncio.ensure_future(
            db.run_grouped(lambda conn: conn.execute("INSERT INTO t VALUES (1)").rowcount, linger_s=60)
        )
        await asyncio.sleep(0.2)  # the database thread holds it, waiting for company
        assert not lingering.done() and _committed(path) == []
        assert await db.run_grouped(eager) == 1
        assert await lingering == 1
        assert seen == [[]]  # the lingering insert was not committed on its own before the eager one
        assert _committed(path) == [1, 2]  # one commit carried both
    finally:
        db.close()


async def test_a_lingering_write_commits_alone_when_nothing_else_comes_and_before_later_jobs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    db = SqliteDatabase(path, "CREATE TABLE t (k INTEGER PRIMARY KEY);")
    try:
        # Nothing else to share with: it commits by itself once the linger is over.
        assert await db.run_grouped(lambda conn: conn.execute("INSERT INTO t VALUES (1)").rowcount, linger_s=0.05) == 1
        assert _committed(path) == [1]
        # A job that is not a grouped write runs after the lingering write, which commits first.
        lingering = asyncio.ensure_future(
            db.run_grouped(lambda conn: conn.execute("INSERT INTO t VALUES (2)").rowcount, linger_s=60)
        )
        await asyncio.sleep(0.1)
        rows = await db.run(lambda conn: [r[0] for r in conn.execute("SELECT k FROM t ORDER BY k")])
        assert rows == [1, 2] and await lingering == 1
        # A lingering write that fails fails alone; the write it rode with commits.
        lingering = asyncio.ensure_future(
            db.run_grouped(lambda conn: conn.execute("INSERT INTO t VALUES (2)").rowcount, linger_s=60)
        )
        await asyncio.sleep(0.1)
        assert await db.run_grouped(lambda conn: conn.execute("INSERT INTO t VALUES (3)").rowcount) == 1
        with pytest.raises(sqlite3.IntegrityError):
            await lingering
        assert _committed(path) == [1, 2, 3]
    finally:
        db.close()
    # Closing commits what still lingers.
    db = SqliteDatabase(path, "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY);")
    lingering = asyncio.ensure_future(
        db.run_grouped(lambda conn: conn.execute("INSERT INTO t VALUES (4)").rowcount, linger_s=60)
    )
    await asyncio.sleep(0.1)
    await asyncio.get_running_loop().run_in_executor(None, db.close)
    assert await lingering == 1 and _committed(path) == [1, 2, 3, 4]


async def test_jobs_submitted_in_one_loop_pass_reach_the_thread_together_and_in_order(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    db = SqliteDatabase(path, "CREATE TABLE t (k INTEGER PRIMARY KEY);")
    try:
        await db.run(lambda conn: None)
        seen: list[list[int]] = []

        def insert(k: int):  # type: ignore[no-untyped-def]
            def body(conn: sqlite3.Connection) -> int:
                seen.append(_committed(path))
                return conn.execute("INSERT INTO t VALUES (?)", (k,)).rowcount

            return body

        # Submitted in one pass, without awaiting in between: one hand-over, one commit.
        futures = [asyncio.ensure_future(db.run_grouped(insert(k))) for k in (1, 2, 3)]
        assert await asyncio.gather(*futures) == [1, 1, 1]
        assert seen == [[], [], []]
        # A read submitted after writes, in the same pass, runs after their commit.
        write = asyncio.ensure_future(db.run_grouped(insert(4), linger_s=60))
        read = asyncio.ensure_future(db.run(lambda conn: [r[0] for r in conn.execute("SELECT k FROM t ORDER BY k")]))
        assert await read == [1, 2, 3, 4] and await write == 1
        # run_sync (the CLI's way in) waits for what the loop handed in before it.
        lingering = asyncio.ensure_future(db.run_grouped(insert(5), linger_s=60))
        await asyncio.sleep(0)
        rows = await asyncio.get_running_loop().run_in_executor(
            None, db.run_sync, lambda conn: [r[0] for r in conn.execute("SELECT k FROM t ORDER BY k")]
        )
        assert rows == [1, 2, 3, 4, 5] and await lingering == 1
    finally:
        db.close()


async def test_the_database_thread_waits_behind_the_event_loop_and_the_loop_keeps_its_policy(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "t.db", "CREATE TABLE t (k INTEGER PRIMARY KEY);")
    try:
        # The policy is per thread: the database thread's, read on that thread.
        policy = await db.run(lambda conn: os.sched_getscheduler(0))
        assert policy == os.SCHED_BATCH
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
    finally:
        db.close()


async def test_batched_writes_run_as_one_call_and_fail_alone(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "t.db", "CREATE TABLE t (k INTEGER PRIMARY KEY);")
    calls: list[list[int]] = []

    def insert_all(conn: sqlite3.Connection, keys: list[int]) -> list[int]:
        calls.append(list(keys))
        conn.execute(f"INSERT INTO t VALUES {','.join(['(?)'] * len(keys))}", keys)
        return [k * 10 for k in keys]

    try:
        results = await asyncio.gather(*(db.run_batched(insert_all, k, linger_s=0.5) for k in (1, 2, 3)))
        assert results == [10, 20, 30]
        assert calls == [[1, 2, 3]]  # the group's three jobs, one call
        calls.clear()
        # 2 is there already: the batch fails, so the group runs again job by job.
        again = await asyncio.gather(
            *(db.run_batched(insert_all, k, linger_s=0.5) for k in (4, 2, 5)), return_exceptions=True
        )
        assert again[0] == 40 and again[2] == 50 and isinstance(again[1], sqlite3.IntegrityError)
        assert calls == [[4, 2, 5], [4], [2], [5]]
        rows = await db.run(lambda conn: [r[0] for r in conn.execute("SELECT k FROM t ORDER BY k")])
        assert rows == [1, 2, 3, 4, 5]
    finally:
        db.close()
