"""Checkpoints of calls in progress: many in one transaction, replaced as calls go on, and
closed into records exactly once (by the call's end, or by recovery after a crash)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.cdr_store import CDR_SCHEMA, SqliteCdrStore, keys_where
from gateway.storage.sqlite import SqliteDatabase
from tests.billing.records import call

ANSWER = datetime(2026, 10, 5, 2, 0, 7, tzinfo=UTC)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    database = SqliteDatabase(tmp_path / "gateway.db", CDR_SCHEMA)
    try:
        yield database
    finally:
        database.close()


async def test_checkpoints_taken_together_share_one_commit_and_close_once(db: SqliteDatabase) -> None:
    store = SqliteCdrStore(db)
    calls = [call(ANSWER, 10, ingress=i % 2 == 0) for i in range(3)]
    statements: list[str] = []
    await db.run(lambda conn: conn.set_trace_callback(statements.append))

    await store.checkpoint(calls)
    assert [s.split()[0] for s in statements] == ["BEGIN", "INSERT", "COMMIT"]  # all three in one statement
    later = [dataclasses.replace(c, end=c.end + timedelta(seconds=15)) for c in calls]
    await store.checkpoint(later)  # the same calls later on: replaced, not added
    await db.run(lambda conn: conn.set_trace_callback(None))

    assert await store.write(dataclasses.replace(calls[0], end=calls[0].end + timedelta(seconds=20)))
    recovered = await store.recover()
    assert sorted(r.session_id for r in recovered) == sorted(c.session_id for c in calls[1:])
    assert all(r.end == c.end for r, c in zip(sorted(recovered, key=lambda r: r.session_id),
                                              sorted(later[1:], key=lambda r: r.session_id), strict=True))  # fmt: skip
    assert await store.recover() == []  # once
    listed = await store.list()
    assert sorted(r.session_id for r in listed) == sorted(c.session_id for c in calls)


async def test_records_of_calls_ending_together_share_one_commit(
    db: SqliteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A long wait, so that the two writes meet however slow this machine is right now.
    monkeypatch.setattr("gateway.cdr_store._WRITE_LINGER_S", 1.0)
    store = SqliteCdrStore(db)
    await db.run(lambda conn: None)  # the schema is in place before counting
    statements: list[str] = []
    await db.run(lambda conn: conn.set_trace_callback(statements.append))
    first = asyncio.ensure_future(store.write(call(ANSWER, 10)))
    await asyncio.sleep(0.05)  # on the database thread, waiting for company
    assert not first.done()
    assert await store.write(call(ANSWER, 20)) and await first  # each returns once durable
    await db.run(lambda conn: conn.set_trace_callback(None))
    assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == ["BEGIN IMMEDIATE", "COMMIT"]
    assert len(await store.list()) == 2


async def test_records_ending_together_take_three_statements_whatever_their_number(
    db: SqliteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each statement gives up the interpreter lock and waits to take it back: while the loop
    # is busy, that wait is its switch interval. So records are written many per statement.
    monkeypatch.setattr("gateway.cdr_store._WRITE_LINGER_S", 1.0)
    store = SqliteCdrStore(db)
    calls = [call(ANSWER, 10 + i) for i in range(30)]
    await store.checkpoint(calls)
    duplicate = calls[0]
    assert await store.write(duplicate)
    statements: list[str] = []
    await db.run(lambda conn: conn.set_trace_callback(statements.append))
    results = await asyncio.gather(*(store.write(c) for c in [*calls[1:], duplicate, calls[5]]))
    await db.run(lambda conn: conn.set_trace_callback(None))
    assert results == [True] * 29 + [False, False]  # written once; again, or twice at once: False
    assert [s.split()[0] for s in statements] == ["BEGIN", "SELECT", "INSERT", "DELETE", "COMMIT"]
    assert sorted(r.session_id for r in await store.list()) == sorted(c.session_id for c in calls)
    assert await store.recover() == []  # every checkpoint went with its record


async def test_a_batch_finds_its_records_and_checkpoints_by_key_not_by_scanning(db: SqliteDatabase) -> None:
    for table in ("call_records", "open_calls"):
        plan = await db.run(
            lambda conn, t=table: conn.execute(
                f"EXPLAIN QUERY PLAN SELECT 1 FROM {t} WHERE {keys_where(3)}", ["s", "a", "n"] * 3
            ).fetchall()
        )
        details = [row[3] for row in plan]
        assert not any(d.startswith("SCAN") for d in details), details
        assert any("USING COVERING INDEX" in d or "USING PRIMARY KEY" in d or "USING INDEX" in d for d in details)
