"""Benchmark: call records rated and stored per second, on SQLite and on PostgreSQL.

    PYTHONPATH=. python bench/billing_rate_store.py [--calls 3000]

Baselines measured in the same run: rating alone (the pure core, no storage)
and the raw insert of the same rows without rating or ledger. Each store is
measured one record per transaction (as calls end) and in batches of 500 (as a
site catches up after a link outage). PostgreSQL is a private server started here.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from billing.config import BillingConfig  # noqa: E402
from billing.records import CALL_COLUMNS, call_row  # noqa: E402
from billing.service import BillingService  # noqa: E402
from billing.store.ledger import LedgerStore  # noqa: E402
from billing.store.open import open_store  # noqa: E402
from billing.store.sql import Tx  # noqa: E402
from billing.tariff_files import TariffBook, load_tariff_file  # noqa: E402
from gateway.cdr import CallRecord  # noqa: E402
from tests.support.services import postgres_server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
USERS = [(f"u{i}@acme", f"site{i % 8}") for i in range(64)]
NUMBERS = ["+8613800000000", "+861012345678", "+243812345678", "+256701234567", "sip:bob@acme"]


def records(n: int, seed: int = 1) -> list[CallRecord]:
    rng = random.Random(seed)
    base = datetime(2026, 10, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        user, site = USERS[i % len(USERS)]
        start = base + timedelta(seconds=rng.randrange(30 * 86400))
        answered = rng.random() < 0.85
        talk = timedelta(seconds=rng.randrange(5, 1800), milliseconds=rng.randrange(1000))
        out.append(
            CallRecord(
                session_id=f"{seed:04x}{i:028x}", leg="a", node="bench", tenant="acme", site=site,
                caller=f"sip:{user}", callee=rng.choice(NUMBERS), account=user, ingress=True,
                category=rng.choice(["voice", "voice", "voice", "bridged"]), start=start,
                answer=start + timedelta(seconds=3) if answered else None,
                end=start + timedelta(seconds=3) + talk if answered else start + timedelta(seconds=20),
                disposition="answered" if answered else "no_answer", sip_status=200 if answered else 480,
                codec="PCMA", packets_in=1000, packets_out=1000, bytes_in=172000, bytes_out=172000,
                call_id=f"c{i}", ended_by="caller",
            )
        )  # fmt: skip
    return out


async def prepare(store: LedgerStore) -> BillingService:
    book = TariffBook({"acme-standard": load_tariff_file(REPO / "config/tariffs/acme-standard.toml")})
    service = BillingService(store, book, BillingConfig())
    for user, site in USERS:
        await service.ensure_account(user, site=site, payment="postpaid")
    await service.set_plan("acme", "acme-standard", datetime(2026, 1, 1, tzinfo=UTC))
    return service


async def timed(label: str, n: int, fn: Callable[[], Awaitable[object]]) -> float:
    t0 = time.perf_counter()
    await fn()
    rate = n / (time.perf_counter() - t0)
    print(f"  {label:<44} {rate:>10.0f} records/s")
    return rate


async def bench_store(name: str, open_fn: Callable[[], Awaitable[LedgerStore]], calls: list[CallRecord]) -> None:
    n = len(calls)
    print(f"{name}:")
    store = await open_fn()
    try:
        service = await prepare(store)
        ratings = [await service.rate(r) for r in calls]
        assert sum(r.status == "rated" for r in ratings) > n // 2, "baseline did no work: nothing rated"

        async def insert_raw(tx: Tx) -> None:
            await tx.executemany(
                f"INSERT INTO bench_raw ({', '.join(CALL_COLUMNS)}) VALUES ({','.join('?' * len(CALL_COLUMNS))})",
                [call_row(r) for r in calls],
            )

        async def raw() -> None:
            await store.db.run(insert_raw)

        async def create_raw(tx: Tx) -> None:
            await tx.execute(
                "CREATE TABLE bench_raw AS SELECT session_id, leg, node, tenant, site, caller, "
                "callee, account, "
                "ingress, category, start_us, answer_us, end_us, disposition, sip_status, codec, packets_in, "
                "packets_out, bytes_in, bytes_out, call_id, ended_by FROM billing_calls WHERE 1 = 0"
            )

        await store.db.run(create_raw)
        raw_rate = await timed("baseline: raw insert of the rows, one batch", n, raw)

        async def one_by_one() -> None:
            for r in calls[: n // 2]:
                await service.call_ended(r)

        async def batched() -> None:
            half = calls[n // 2 :]
            for i in range(0, len(half), 500):
                chunk = half[i : i + 500]
                await store.insert_calls([(r, await service.rate(r)) for r in chunk])

        single = await timed("rated + stored + charged, one per transaction", n // 2, one_by_one)
        batch = await timed("rated + stored + charged, 500 per transaction", n - n // 2, batched)
        stored = await store.count_calls(tenant="acme", start_us=0, end_us=2**62)
        assert stored == n, f"stored {stored} of {n}"
        print(f"  one-by-one / raw insert: {single / raw_rate:.3f}   batched / raw insert: {batch / raw_rate:.3f}")
    finally:
        await store.close()


async def main(n: int) -> None:
    calls = records(n)
    store = await open_store("sqlite", sqlite_path=Path(tempfile.mkdtemp()) / "rate.db")
    service = await prepare(store)
    t0 = time.perf_counter()
    ratings = [await service.rate(r) for r in calls]
    rating_rate = n / (time.perf_counter() - t0)
    await store.close()
    rated = sum(r.status == "rated" for r in ratings)
    if rated == 0:
        raise SystemExit("baseline did no work: no call was rated")
    print(f"baseline: rating alone (accounts and plans read from SQLite): {rating_rate:.0f} records/s ({rated} rated)")
    with tempfile.TemporaryDirectory() as tmp:
        await bench_store(
            "SQLite (synchronous=FULL)", lambda: open_store("sqlite", sqlite_path=Path(tmp) / "b.db"), calls
        )
    with postgres_server() as pg:
        await bench_store("PostgreSQL 15 (private server, fsync off)",
                          lambda: open_store("postgresql", postgres_dsn=pg.dsn()), calls)  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=3000)
    asyncio.run(main(parser.parse_args().calls))
