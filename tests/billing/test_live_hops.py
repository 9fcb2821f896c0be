"""Live billing's cost in database work: round trips to SQLite's thread and commits per call,
and the ordering of a call's answer and end, which the B2BUA sends from separate tasks."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billing.live.spend import LiveSpend, MemoryLiveSpend, RedisLiveSpend
from billing.store.ledger import LedgerStore
from billing.store.open import open_store
from billing.store.sql import SqliteBillingDatabase, SqliteBodyError, Tx
from tests.billing.conftest import FakeClock
from tests.billing.records import call
from tests.billing.test_live import T0, make_live, prepaid, spend  # noqa: F401  (spend is a fixture)

D = Decimal


class Hops:
    """Counts reads served on the loop's thread (a read transaction, or one statement), jobs sent to the database thread, and write
    commits (each one fsync) it runs."""

    def __init__(self, db: SqliteBillingDatabase) -> None:
        self.reads = 0
        self.jobs = 0
        self.commits = 0
        reader = db._reader
        read = reader.read

        async def counted_read(fn: Callable[[Any], Any]) -> Any:
            self.reads += 1
            return await read(fn)

        reader.read = counted_read  # type: ignore[method-assign]
        fetch_one = reader.fetch_one

        async def counted_fetch_one(sql: str, args: tuple[Any, ...]) -> Any:
            self.reads += 1  # a read of one statement, without a transaction around it
            return await fetch_one(sql, args)

        reader.fetch_one = counted_fetch_one  # type: ignore[method-assign]
        inner = db.sqlite
        submit = inner._submit

        def counted(fn: Callable[[Any], Any], grouped: bool, linger_s: float = 0.0) -> Any:
            self.jobs += 1
            return submit(fn, grouped, linger_s)

        inner._submit = counted  # type: ignore[method-assign]
        writing = [False]

        def trace(sql: str) -> None:
            statement = sql.lstrip().upper()
            if statement.startswith("BEGIN"):
                writing[0] = "IMMEDIATE" in statement
            elif statement.startswith("COMMIT") and writing[0]:
                self.commits += 1

        inner.run_sync(lambda c: c.set_trace_callback(trace))
        self.take()

    def take(self) -> tuple[int, int, int]:
        out = (self.reads, self.jobs, self.commits)
        self.reads = self.jobs = self.commits = 0
        return out


@pytest.mark.parametrize("payment", ["postpaid", "prepaid"])
async def test_a_call_reads_only_what_its_limits_need_and_writes_at_answer_and_at_end(
    tmp_path: Path, clock: FakeClock, payment: str
) -> None:
    store = await open_store("sqlite", sqlite_path=tmp_path / "b.db")
    store._clock = lambda: 0.0  # all within one recheck interval of the accounts version
    limited = payment == "prepaid"  # else no account of the chain has a limit: nothing to read
    try:
        live = make_live(store, MemoryLiveSpend(), clock)
        await prepaid(live, credit="100.00")  # a plan for acme, and credit for alice's calls
        if payment == "postpaid":
            await live.service.ensure_account("alice@acme", site="kinshasa", payment="postpaid", replace_existing=True)
        assert isinstance(store.db, SqliteBillingDatabase)
        await store.chain_view("alice@acme")  # the loop's read connection opens on first use
        hops = Hops(store.db)
        record = call(T0, 30)
        assert (await live.authorize("alice@acme", "+8613800000000", "voice", T0)).allowed
        assert hops.take() == (limited, 0, 0)  # the chain's balances, read on the loop
        assert (await live.call_answered(replace(record, end=T0))).allowed
        # The reads of the decision; the checkpoint, for a call with a ceiling to cap its
        # charge at (an unlimited one is charged from the gateway's own checkpoint after a crash).
        assert hops.take() == (limited, int(limited), int(limited))
        rating = await live.call_ended(record)
        assert rating.charged == 3 * 10**5  # 30 s at 0.01/s
        # Rated under the account and plan it was answered with: no read; the charge with the
        # checkpoint's removal.
        assert hops.take() == (0, 1, 1)
        assert await store.open_calls("kinshasa-gw") == []
        # Under load: the next call's answer checkpoint waits for company and shares the
        # commit of another call's charge (two writes, one fsync).
        second = replace(record, session_id="second-call")
        assert (await live.call_answered(replace(second, end=T0))).allowed
        hops.take()
        third = replace(record, session_id="third-call")
        answered, _ = await asyncio.gather(live.call_answered(replace(third, end=T0)), live.call_ended(second))
        assert answered.allowed
        assert hops.take() == ((True, 2, 1) if limited else (False, 1, 1))
        assert [c[0] for c in await store.open_calls("kinshasa-gw")] == (["third-call"] if limited else [])
    finally:
        await store.close()


async def test_an_unrated_call_reads_no_balance(tmp_path: Path, clock: FakeClock) -> None:
    """A prepaid caller with no rate plan, allowed unrated (an internal call, say): what the
    chain holds cannot limit a call that costs nothing, so neither its authorization nor its
    answer reads it; nor does the answer write a checkpoint (nothing reserved to cap: the
    gateway's own checkpoint is what a crash leaves), and the end stores the call only."""
    store = await open_store("sqlite", sqlite_path=tmp_path / "b.db")
    store._clock = lambda: 0.0  # all within one recheck interval of the accounts version
    try:
        live = make_live(store, MemoryLiveSpend(), clock)
        await live.service.ensure_account("dave@other", site="kinshasa", payment="prepaid")
        assert isinstance(store.db, SqliteBillingDatabase)
        await store.chain_view("dave@other")  # the chain is known
        hops = Hops(store.db)
        verdict = await live.authorize("dave@other", "+8613800000000", "voice", T0)
        assert verdict.allowed and verdict.reason.startswith("unrated")
        assert hops.take() == (0, 0, 0)
        record = call(T0, 30, account="dave@other")
        answer = await live.call_answered(replace(record, end=T0))
        assert answer.allowed and answer.max_duration_s == 300  # a slice of time, nothing reserved
        assert hops.take() == (0, 0, 0)
        rating = await live.call_ended(record)
        assert rating.charged == 0
        assert hops.take() == (0, 1, 1)
        assert await store.open_calls("kinshasa-gw") == []
    finally:
        await store.close()


async def test_a_sqlite_transaction_body_may_await_only_its_tx(tmp_path: Path) -> None:
    store = await open_store("sqlite", sqlite_path=tmp_path / "b.db")
    try:

        async def body(tx: Tx) -> int:
            await tx.execute("INSERT INTO billing_plans (account, active_from, tariff) VALUES ('acme', 1, 'x')")
            await asyncio.sleep(0)
            return 1

        with pytest.raises(SqliteBodyError):
            await store.db.run(body)
        assert await store.plans(["acme"]) == {"acme": []}  # rolled back
    finally:
        await store.close()


async def test_an_end_that_overtakes_its_answer_leaves_nothing_open(
    store: LedgerStore,
    spend: LiveSpend,  # noqa: F811
    clock: FakeClock,
) -> None:
    live = make_live(store, spend, clock)
    await prepaid(live)
    record = call(T0, 30)
    answering = asyncio.create_task(live.call_answered(replace(record, end=T0)))
    await asyncio.sleep(0)  # the answer is under way, waiting on the database
    rating = await live.call_ended(record)
    assert (await answering).allowed
    assert rating.charged == 3 * 10**5
    assert live.schedule.calls == {}
    assert await store.open_calls("kinshasa-gw") == []
    assert await spend.calls_of("kinshasa-gw") == []
    assert (await spend.usage(["alice@acme"]))["alice@acme"].reserved == 0


async def test_an_answer_that_comes_after_the_end_is_refused(
    store: LedgerStore,
    spend: LiveSpend,  # noqa: F811
    clock: FakeClock,
) -> None:
    live = make_live(store, spend, clock)
    await prepaid(live)
    record = call(T0, 30)
    await live.call_ended(record)
    late = await live.call_answered(replace(record, end=T0))
    assert (late.allowed, late.reason) == (False, "call already ended")
    assert live.schedule.calls == {}
    assert await store.open_calls("kinshasa-gw") == []
    assert await spend.calls_of("kinshasa-gw") == []


async def test_a_charge_and_a_failed_write_queued_together_fail_alone(tmp_path: Path, clock: FakeClock) -> None:
    store = await open_store("sqlite", sqlite_path=tmp_path / "b.db")
    try:
        live = make_live(store, MemoryLiveSpend(), clock)
        await prepaid(live)

        async def broken(tx: Tx) -> None:
            await tx.execute("INSERT INTO billing_nowhere VALUES (1)")

        records = [call(T0, 30) for _ in range(3)]
        results = await asyncio.gather(
            *(live.call_ended(r) for r in records), store.db.run(broken), return_exceptions=True
        )
        assert [r.charged for r in results[:3]] == [3 * 10**5] * 3  # type: ignore[union-attr]
        assert isinstance(results[3], Exception)
        assert (await live.service.balance("alice@acme")).balance == 10**6 - 3 * 3 * 10**5
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("payment", "at_set_up", "at_answer", "counted", "at_end"),
    [
        # No limit anywhere in the chain: live spend never hears of the call. Nothing to read
        # before it, nothing to count or reserve at answer, nothing to release at the end;
        # a limit set during the call applies to the calls answered after it.
        ("postpaid", [], [], 0, []),
        # Only a concurrent-call limit: what is open is read before the call; at answer the
        # call is counted (the limit checked again in the same script) and its slice
        # reserved; both are released at the end.
        ("postpaid-max2", ["transaction"], ["run_script", "run_script"], 1, ["run_script"]),
        # Credit to watch: what the chain holds sizes the first try; the answer's open reads it
        # again in the same script (no second trip), then reserves the first slice.
        ("prepaid", ["transaction"], ["run_script", "run_script"], 1, ["run_script"]),
    ],
)
async def test_a_call_costs_at_most_one_redis_round_trip_per_step_and_one_to_reserve(
    tmp_path: Path,
    clock: FakeClock,
    redis_url: str,
    payment: str,
    at_set_up: list[str],
    at_answer: list[str],
    counted: int,
    at_end: list[str],
) -> None:
    store = await open_store("sqlite", sqlite_path=tmp_path / "b.db")
    shared = RedisLiveSpend.from_url(redis_url, prefix=f"t{secrets.token_hex(4)}:")
    trips: list[str] = []
    depth = [0]
    client = shared._r
    for name in ("execute", "transaction", "run_script"):
        inner = getattr(client, name)

        async def counted_trip(*args: Any, _inner: Any = inner, _name: str = name) -> Any:
            if not depth[0]:  # a script's EVALSHA (and its EVAL retry) is the script's own trip
                trips.append(_name)
            depth[0] += 1
            try:
                return await _inner(*args)
            finally:
                depth[0] -= 1

        setattr(client, name, counted_trip)
    try:
        live = make_live(store, shared, clock)
        await prepaid(live)
        if payment.startswith("postpaid"):
            limit = 2 if payment == "postpaid-max2" else None
            await live.service.ensure_account(
                "alice@acme", site="kinshasa", payment="postpaid", max_concurrent=limit, replace_existing=True
            )
        record = call(T0, 30)
        assert (await live.authorize("alice@acme", "+8613800000000", "voice", T0)).allowed
        assert trips == at_set_up
        trips.clear()
        assert (await live.call_answered(replace(record, end=T0))).allowed
        assert trips == at_answer
        trips.clear()
        assert (await shared.usage(["alice@acme"]))["alice@acme"].open_calls == counted
        trips.clear()
        rating = await live.call_ended(record)
        assert rating.charged == 3 * 10**5
        assert trips == at_end  # close, releasing the reservation (if there was one)
        assert await shared.calls_of("kinshasa-gw") == []
        trips.clear()
        # A prepaid caller without a rate plan, allowed unrated: no credit to check, so no
        # read of what is reserved.
        await live.service.ensure_account("dave@other", site="kinshasa", payment="prepaid")
        trips.clear()
        verdict = await live.authorize("dave@other", "+8613800000000", "voice", T0)
        assert verdict.allowed and verdict.reason.startswith("unrated")
        assert trips == []
    finally:
        await shared.aclose()
        await store.close()
