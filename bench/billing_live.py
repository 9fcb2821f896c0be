"""Benchmark: live billing of a call (authorize at INVITE, call_answered at 200, call_ended at BYE) on SQLite.

    PYTHONPATH=. python bench/billing_live.py [--calls 400] [--concurrency 32]

For a postpaid account without limits and a prepaid account with credit it prints,
per operation: the round trips to the database thread, the commits (each one an
fsync of the WAL at synchronous=FULL) and the mean time, one call at a time; then
calls per second with ``--concurrency`` calls in flight. The baseline, measured in
the same run on the same kind of database, is what the gateway does for every call
anyway: the call record written durably by ``SqliteCdrStore.write`` (grouped
commit), one at a time and with the same concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvloop  # noqa: E402

from billing.config import BillingConfig  # noqa: E402
from billing.live.controller import LiveBilling  # noqa: E402
from billing.live.spend import MemoryLiveSpend  # noqa: E402
from billing.service import BillingService  # noqa: E402
from billing.store.open import open_store  # noqa: E402
from billing.store.sql import SqliteBillingDatabase  # noqa: E402
from billing.tariff_files import TariffBook, load_tariff_file  # noqa: E402
from gateway.cdr import CallRecord  # noqa: E402
from gateway.cdr_store import CDR_SCHEMA, SqliteCdrStore  # noqa: E402
from gateway.storage.sqlite import SqliteDatabase  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ACCOUNTS = {"postpaid": "post@acme", "prepaid": "pre@acme"}
CALLEE = "+8613800000000"


@dataclass
class Counter:
    hops: int = 0
    commits: int = 0


def record(n: int, account: str, answer: datetime, seconds: int = 30) -> CallRecord:
    return CallRecord(
        session_id=f"{n:032x}", leg="a", node="bench", tenant="acme", site="hq", caller=f"sip:{account}",
        callee=f"sip:{CALLEE}@gw", account=account, ingress=True, category="voice",
        start=answer - timedelta(seconds=3), answer=answer, end=answer + timedelta(seconds=seconds),
        disposition="answered", sip_status=200, codec="PCMA", packets_in=1500, packets_out=1500,
        bytes_in=258000, bytes_out=258000, call_id=f"c{n}", ended_by="caller",
    )  # fmt: skip


def instrument(db: SqliteDatabase, counter: Counter) -> None:
    """Count every job sent to the database thread, and every COMMIT it runs."""
    submit = db._submit

    def counted(fn: Any, grouped: bool) -> Any:
        counter.hops += 1
        return submit(fn, grouped)

    db._submit = counted  # type: ignore[method-assign]

    writing = [False]

    def trace(sql: str) -> None:
        # Only a write transaction's COMMIT syncs the WAL; a read transaction's costs nothing.
        statement = sql.lstrip().upper()
        if statement.startswith("BEGIN"):
            writing[0] = "IMMEDIATE" in statement or "EXCLUSIVE" in statement
        elif statement.startswith("COMMIT") and writing[0]:
            counter.commits += 1
            writing[0] = False

    db.run_sync(lambda c: c.set_trace_callback(trace))
    counter.hops = 0


async def setup(path: Path) -> tuple[LiveBilling, SqliteDatabase]:
    store = await open_store("sqlite", sqlite_path=path)
    book = TariffBook({"acme-standard": load_tariff_file(REPO / "config/tariffs/acme-standard.toml")})
    service = BillingService(store, book, BillingConfig())
    await service.ensure_account(ACCOUNTS["postpaid"], site="hq", payment="postpaid")
    await service.ensure_account(ACCOUNTS["prepaid"], site="hq", payment="prepaid")
    await service.set_plan("acme", "acme-standard", datetime(2026, 1, 1, tzinfo=UTC))
    await service.topup(ACCOUNTS["prepaid"], Decimal("100000"), reference="bench")
    assert isinstance(store.db, SqliteBillingDatabase)
    return LiveBilling(service, MemoryLiveSpend(), "bench"), store.db.sqlite


_ids = iter(range(1, 10**9))


async def one_call(live: LiveBilling, account: str, phases: dict[str, Callable[[], None]] | None = None) -> int:
    now = datetime.now(UTC)
    rec = record(next(_ids), account, now)
    mark = phases or {}
    auth = await live.authorize(account, rec.callee, "voice", now)
    mark.get("authorize", lambda: None)()
    answered = await live.call_answered(replace(rec, end=now))
    mark.get("call_answered", lambda: None)()
    rating = await live.call_ended(rec)
    mark.get("call_ended", lambda: None)()
    if not (auth.allowed and answered.allowed and rating.status == "rated" and rating.charged > 0):
        raise SystemExit(f"live billing did no work: {auth} {answered} {rating.status} {rating.reason}")
    return rating.charged


async def count(live: LiveBilling, db: SqliteDatabase, account: str) -> dict[str, Counter]:
    counter = Counter()
    instrument(db, counter)
    out: dict[str, Counter] = {}

    def snap(name: str) -> Callable[[], None]:
        def take() -> None:
            out[name] = Counter(counter.hops, counter.commits)
            counter.hops = counter.commits = 0

        return take

    await one_call(live, account)  # warm whatever is warmed on first use
    counter.hops = counter.commits = 0
    await one_call(live, account, {p: snap(p) for p in ("authorize", "call_answered", "call_ended")})
    db.run_sync(lambda c: c.set_trace_callback(None))
    return out


async def sequential(live: LiveBilling, account: str, n: int) -> dict[str, float]:
    spent = {"authorize": 0.0, "call_answered": 0.0, "call_ended": 0.0}
    last = [0.0]

    def lap(name: str) -> Callable[[], None]:
        def take() -> None:
            t = time.perf_counter()
            spent[name] += t - last[0]
            last[0] = t

        return take

    laps = {p: lap(p) for p in spent}
    for _ in range(n):
        last[0] = time.perf_counter()
        await one_call(live, account, laps)
    return {p: s / n * 1e6 for p, s in spent.items()}


async def in_flight(n: int, concurrency: int, fn: Callable[[], Awaitable[object]]) -> float:
    queue: Iterator[int] = iter(range(n))

    async def worker() -> None:
        for _ in queue:
            await fn()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - t0)


async def baseline(path: Path, n: int, concurrency: int) -> tuple[float, float]:
    db = SqliteDatabase(path, CDR_SCHEMA)
    cdrs = SqliteCdrStore(db)
    now = datetime.now(UTC)
    try:
        t0 = time.perf_counter()
        stored = sum([await cdrs.write(record(next(_ids), "post@acme", now)) for _ in range(n)])
        one = n / (time.perf_counter() - t0)
        stored_before = stored

        async def write() -> None:
            nonlocal stored
            new = await cdrs.write(record(next(_ids), "post@acme", now))
            stored += new

        many = await in_flight(n, concurrency, write)
        if stored_before != n or stored != 2 * n:
            raise SystemExit(f"baseline did no work: stored {stored} of {2 * n} call records")
        return one, many
    finally:
        db.close()


async def main(n: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base_one, base_many = await baseline(Path(tmp) / "cdr.db", n, concurrency)
        print(f"baseline: call record stored durably (SqliteCdrStore.write), one at a time: {base_one:8.0f} calls/s")
        print(f"baseline: the same, {concurrency} in flight:                              {base_many:8.0f} calls/s")
        live, db = await setup(Path(tmp) / "billing.db")
        try:
            for kind, account in ACCOUNTS.items():
                counts = await count(live, db, account)
                per_op = await sequential(live, account, n)
                print(f"{kind} account ({account}):")
                for op, c in counts.items():
                    print(f"  {op:<14} {c.hops:3d} round trips  {c.commits:2d} commits  {per_op[op]:8.0f} us")
                total = sum(per_op.values())
                hops = sum(c.hops for c in counts.values())
                commits = sum(c.commits for c in counts.values())
                print(f"  {'whole call':<14} {hops:3d} round trips  {commits:2d} commits  {total:8.0f} us"
                      f"  = {1e6 / total:6.0f} calls/s, {1e6 / total / base_one:.2f}x baseline")  # fmt: skip
                many = await in_flight(n, concurrency, lambda a=account: one_call(live, a))  # type: ignore[misc]
                print(f"  {concurrency} in flight: {many:6.0f} calls/s, {many / base_many:.2f}x baseline")
        finally:
            await live.service.store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    uvloop.run(main(args.calls, args.concurrency))
