"""Fixtures: the billing store on SQLite and on a real PostgreSQL, the same tests against both."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from billing.config import BillingConfig
from billing.service import BillingService
from billing.store.ledger import LedgerStore
from billing.store.open import open_store
from billing.tariff_files import TariffBook
from tests.billing.tariffs import flat, peak_offpeak
from tests.support.services import Postgres, postgres_server, redis_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


async def fresh_postgres_db(server: Postgres) -> str:
    name = "t_" + secrets.token_hex(6)
    conn = await asyncpg.connect(server.dsn())
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return server.dsn(name)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LedgerStore]:
    if request.param == "sqlite":
        s = await open_store("sqlite", sqlite_path=tmp_path / "billing.db")
    else:
        dsn = await fresh_postgres_db(request.getfixturevalue("postgres"))
        s = await open_store("postgresql", postgres_dsn=dsn)
    try:
        yield s
    finally:
        await s.close()


class FakeClock:
    """Wall-clock UTC the tests move by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 10, 5, 2, 0, tzinfo=UTC))


@pytest.fixture
def book() -> TariffBook:
    cn = peak_offpeak("0.20", "0.10", first=60, then=1)
    return TariffBook({"cn": cn, "flat": flat("0.60", 1, prefixes=("",))})


@pytest.fixture
async def service(store: LedgerStore, book: TariffBook, clock: FakeClock) -> BillingService:
    return BillingService(store, book, BillingConfig(), clock)
