"""Accounts, rating of stored calls, the append-only idempotent ledger: on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from billing.accounts import Account
from billing.config import BillingConfig
from billing.errors import AccountError, BillingError, LedgerError
from billing.service import BillingService
from billing.store.ledger import VERSION_RECHECK_S, LedgerStore, scope, spent_since_sql
from billing.store.open import open_store
from billing.store.sql import Row, SqliteBillingDatabase, Tx
from billing.tariff_files import TariffBook
from billing.timeutil import to_us
from tests.billing.conftest import FakeClock, fresh_postgres_db
from tests.billing.records import call
from tests.billing.tariffs import peak_offpeak

D = Decimal
MON_10 = datetime(2026, 10, 5, 2, 0, tzinfo=UTC)  # Monday 10:00 in Beijing: peak


async def alice(service: BillingService, **kwargs: object) -> None:
    await service.ensure_account("alice@acme", site="kinshasa", payment="postpaid", **kwargs)  # type: ignore[arg-type]
    await service.set_plan("acme", "cn", datetime(2026, 1, 1, tzinfo=UTC))


async def test_a_user_account_brings_its_site_and_tenant(service: BillingService) -> None:
    await service.ensure_account("alice@ACME", site="kinshasa")
    accounts = {a.id: a for a in await service.store.list_accounts("acme")}
    assert set(accounts) == {"acme", "acme/kinshasa", "alice@acme"}
    assert accounts["alice@acme"].payment == "prepaid"  # the safe default
    assert accounts["acme"].payment == "postpaid" and accounts["acme"].credit_limit is None
    assert [a.id for a in await service.chain(accounts["alice@acme"])] == [
        "alice@acme",
        "acme/kinshasa",
        "acme",
    ]
    with pytest.raises(AccountError, match="needs a site"):
        await service.ensure_account("bob@acme")
    with pytest.raises(AccountError, match="no account carol@acme"):
        await service.balance("carol@acme")


async def test_an_ended_call_is_rated_stored_and_charged(service: BillingService) -> None:
    await alice(service)
    rating, new = await service.call_ended(call(MON_10, 125))
    assert new and rating.status == "rated"
    assert (rating.destination, rating.billed_s, rating.cost, rating.precise) == (
        "China",
        125,
        420_000,
        "0.416666666667",
    )
    assert rating.spans == "peak@0:1x60s*0.20/60;peak@60:65x1s*0.20/60"
    balance = await service.balance("alice@acme")
    assert balance.balance == -420_000  # rounded once: 0.42
    assert (await service.balance("acme")).balance == -420_000
    assert (await service.balance("acme/kinshasa")).spent_last_hour == 420_000


async def test_a_resent_record_is_never_charged_twice(service: BillingService) -> None:
    await alice(service)
    record = call(MON_10, 60)
    first, new1 = await service.call_ended(record)
    again, new2 = await service.call_ended(record)
    assert (new1, new2) == (True, False)
    assert again == first
    entries = await service.store.ledger(await service.account("alice@acme"))
    assert [(e.kind, e.amount) for e in entries] == [("charge", -200_000)]


async def test_unanswered_calls_and_other_legs_cost_nothing(service: BillingService) -> None:
    await alice(service)
    free, _ = await service.call_ended(call(None))
    audit, _ = await service.call_ended(call(MON_10, 60, leg="b"))
    transit, _ = await service.call_ended(call(MON_10, 60, ingress=False))
    assert [free.status, audit.status, transit.status] == ["free", "audit", "audit"]
    assert (await service.balance("alice@acme")).balance == 0


async def test_unrated_calls_are_kept_and_rated_when_fixed(service: BillingService, book: TariffBook) -> None:
    unknown, _ = await service.call_ended(call(MON_10, 60, account="dave@acme"))
    assert (unknown.status, unknown.reason) == ("unrated", "unknown account 'dave@acme'")
    await service.ensure_account("dave@acme", site="kinshasa", payment="postpaid")
    no_plan, _ = await service.call_ended(call(MON_10, 60, account="dave@acme"))
    assert no_plan.status == "unrated" and no_plan.reason.startswith("no rate plan for dave@acme")
    await service.set_plan("acme/kinshasa", "cn", datetime(2026, 10, 1, tzinfo=UTC))
    no_rate, _ = await service.call_ended(call(MON_10, 60, account="dave@acme", to="sip:+4420000000@gw"))
    assert no_rate.status == "unrated" and "no voice destination for '4420000000'" in no_rate.reason
    # Fix: the plan exists now; the UK needs a tariff that knows it.
    service.tariffs = TariffBook({**{n: book.get(n) for n in book.names()}, "cn": _with_uk()})  # type: ignore[misc]
    result = await service.rerate(only_unrated=True)
    assert (result.calls, result.rated, result.unrated) == (3, 3, 0)
    assert result.charged_after == 3 * 200_000 - 100_000  # two China peak minutes, one UK at 0.10
    runs = await service.store.runs(no_rate_id := no_rate.session_id, "a")
    assert [r.status for r in runs] == ["unrated", "rated"] and no_rate_id
    assert (await service.balance("dave@acme")).balance == -500_000


def _with_uk() -> object:
    from dataclasses import replace

    from billing.rating import Destination, Rate, RateGroup

    cn = peak_offpeak("0.20", "0.10", first=60, then=1)
    uk = Destination("UK", ("44",), {p: Rate("uk", (RateGroup(0, D("0.10")),)) for p in ("peak", "offpeak", "holiday")})
    return replace(cn, destinations=(*cn.destinations, uk))


async def test_rerating_refunds_and_recharges_leaving_both(service: BillingService, book: TariffBook) -> None:
    await alice(service)
    record = call(MON_10, 120)
    first, _ = await service.call_ended(record)
    assert first.charged == 400_000
    cheaper = peak_offpeak("0.10", "0.05", first=60, then=1)
    service.tariffs = TariffBook({"cn": cheaper})
    result = await service.rerate(start=datetime(2026, 10, 1, tzinfo=UTC), end=datetime(2026, 11, 1, tzinfo=UTC))
    assert (result.calls, result.charged_before, result.charged_after) == (1, 400_000, 200_000)
    entries = sorted(await service.store.ledger(await service.account("alice@acme")), key=lambda e: e.entry)
    assert [(e.entry.rsplit(":", 2)[1:], e.amount) for e in entries] == [
        (["1", "charge"], -400_000),
        (["1", "refund"], 400_000),
        (["2", "charge"], -200_000),
    ]
    assert (await service.balance("alice@acme")).balance == -200_000
    # The record re-sent after the rerate still changes nothing.
    current, new = await service.call_ended(record)
    assert (current.run, current.charged, new) == (2, 200_000, False)
    assert [r.run for r in await service.store.runs(record.session_id, "a")] == [1, 2]


async def test_rerating_outside_the_window_leaves_calls_alone(service: BillingService) -> None:
    await alice(service)
    await service.call_ended(call(MON_10, 60))
    result = await service.rerate(start=datetime(2026, 11, 1, tzinfo=UTC))
    assert result.calls == 0


async def test_rate_plans_apply_from_their_activation(service: BillingService) -> None:
    await service.ensure_account("alice@acme", site="kinshasa", payment="postpaid")
    await service.set_plan("acme", "cn", datetime(2026, 10, 1, tzinfo=UTC))
    await service.set_plan("alice@acme", "flat", datetime(2026, 10, 10, tzinfo=UTC))
    before, _ = await service.call_ended(call(datetime(2026, 9, 30, tzinfo=UTC), 60))
    tenant_plan, _ = await service.call_ended(call(MON_10, 60))
    own_plan, _ = await service.call_ended(call(datetime(2026, 10, 12, 2, tzinfo=UTC), 60))
    assert before.status == "unrated"
    assert (tenant_plan.tariff, tenant_plan.cost) == ("cn", 200_000)
    assert (own_plan.tariff, own_plan.cost) == ("flat", 600_000)
    with pytest.raises(BillingError, match="no tariff named 'nope'"):
        await service.set_plan("acme", "nope", MON_10)


async def test_topups_are_idempotent_on_their_reference(service: BillingService, clock: FakeClock) -> None:
    await service.ensure_account("bob@acme", site="kinshasa")
    assert (await service.balance("bob@acme")).available == 0  # prepaid, nothing yet
    assert await service.topup("bob@acme", D("10.50"), reference="pay-1")
    assert not await service.topup("bob@acme", D("10.50"), reference="pay-1")
    with pytest.raises(LedgerError, match="already used for a different top-up"):
        await service.topup("bob@acme", D("99"), reference="pay-1")
    with pytest.raises(LedgerError, match="positive"):
        await service.topup("bob@acme", D("-1"))
    with pytest.raises(LedgerError, match="decimal places"):
        await service.topup("bob@acme", D("0.0000001"))
    await service.topup("acme/kinshasa", D("5"))
    assert (await service.balance("bob@acme")).available == 10_500_000
    assert (await service.balance("acme/kinshasa")).balance == 15_500_000


async def test_postpaid_credit_and_spend_in_the_last_hour(service: BillingService, clock: FakeClock) -> None:
    await alice(service, credit_limit=D("50"))
    clock.now = MON_10 + timedelta(minutes=30)
    await service.call_ended(call(MON_10, 600))  # ends 10:10
    await service.call_ended(call(MON_10 - timedelta(hours=3), 60))  # 07:00, off-peak
    balance = await service.balance("alice@acme")
    assert balance.balance == -2_100_000
    assert balance.available == 47_900_000
    assert balance.spent_last_hour == 2_000_000


async def test_calls_stream_in_pages_in_a_stable_order(service: BillingService) -> None:
    await alice(service)
    records = [call(MON_10 + timedelta(minutes=i // 2), 30) for i in range(7)]  # pairs share a start
    for record in reversed(records):
        await service.call_ended(record)
    seen = [
        r.session_id async for r, _rating in service.store.stream_calls(tenant="acme", start_us=0, end_us=2**62, page=2)
    ]
    assert seen == sorted(seen, key=lambda s: (next(r.start for r in records if r.session_id == s), s))
    assert sorted(seen) == sorted(r.session_id for r in records)


@pytest.fixture(params=["sqlite", "postgresql"])
async def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[LedgerStore, LedgerStore]]:
    """Two stores on one database: a gateway's and, say, the CLI's in another process."""
    if request.param == "sqlite":
        opened = [await open_store("sqlite", sqlite_path=tmp_path / "billing.db") for _ in range(2)]
    else:
        dsn = await fresh_postgres_db(request.getfixturevalue("postgres"))
        opened = [await open_store("postgresql", postgres_dsn=dsn) for _ in range(2)]
    try:
        yield opened[0], opened[1]
    finally:
        for s in opened:
            await s.close()


async def test_chain_views_see_account_and_plan_changes_made_elsewhere(
    two_stores: tuple[LedgerStore, LedgerStore],
) -> None:
    gateway, cli = two_stores
    seconds = [0.0]
    gateway._clock = lambda: seconds[0]  # the gateway's monotonic clock, stepped below
    now = 1_790_000_000_000_000
    since = now - 3_600_000_000
    tree = [Account("acme", "tenant", "acme"), Account("acme/kin", "site", "acme", "kin")]
    await cli.put_accounts([(a, False) for a in tree] + [(Account("alice@acme", "user", "acme", "kin"), False)], now)
    await cli.set_plan("acme", "cn", now - 10)
    statements: list[str] = []
    if isinstance(gateway.db, SqliteBillingDatabase):
        await gateway.chain_view("alice@acme")  # opens the loop's read connection
        assert gateway.db._reader._conn is not None
        gateway.db._reader._conn.set_trace_callback(statements.append)

    first = await gateway.chain_view("alice@acme", since)
    assert first is not None and [a.id for a in first.chain] == ["alice@acme", "acme/kin", "acme"]
    assert first.plans == {"alice@acme": [], "acme/kin": [], "acme": [(now - 10, "cn")]}
    assert first.balance == {} and first.spent == {}  # postpaid without limits: no money to read
    statements.clear()
    again = await gateway.chain_view("alice@acme", since)
    assert again == first
    seconds[0] += 1.5 * VERSION_RECHECK_S
    assert await gateway.chain_view("alice@acme", since) == first
    if isinstance(gateway.db, SqliteBillingDatabase):
        # Unchanged accounts without limits: nothing read within the recheck interval, then
        # the version alone, not the chain and plans again.
        reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert len(reads) == 1 and "billing_meta" in reads[0], statements

    # The CLI changes a plan, then an account's limits: the next view once the recheck
    # interval is over has the change.
    await cli.set_plan("acme/kin", "flat", now - 5)
    seconds[0] += 1.5 * VERSION_RECHECK_S
    planned = await gateway.chain_view("alice@acme", since)
    assert planned is not None and planned.plans["acme/kin"] == [(now - 5, "flat")]
    await cli.put_account(Account("alice@acme", "user", "acme", "kin", payment="prepaid"), now, replace=True)
    seconds[0] += 1.5 * VERSION_RECHECK_S
    changed = await gateway.chain_view("alice@acme", since)
    assert changed is not None and changed.chain[0].payment == "prepaid"
    assert changed.plans == planned.plans
    assert changed.balance == {"alice@acme": 0}  # prepaid: its balance is read now
    await cli.put_account(Account("bob@acme", "user", "acme", "kin"), now, replace=False)
    assert (await gateway.chain_view("bob@acme")) is not None  # a new account is found at once
    assert await gateway.chain_view("carol@acme") is None
    assert await gateway.chain_view("alice@acme", since) == changed


async def _summed(store: LedgerStore, account: Account) -> int:
    """The account's balance the long way: every ledger row of its scope, summed."""
    where, args = scope(account)

    async def body(tx: Tx) -> list[Row]:
        return await tx.fetch(f"SELECT COALESCE(SUM(amount), 0) FROM billing_ledger WHERE {where}", *args)

    return int((await store.db.run(body, write=False))[0][0])


async def test_balances_are_the_ledger_summed_at_every_level(service: BillingService) -> None:
    await alice(service)
    await service.ensure_account("bob@acme", site="matadi", payment="postpaid")
    await service.ensure_account("carol@zenith", site="lagos", payment="postpaid")
    await service.set_plan("zenith", "cn", datetime(2026, 1, 1, tzinfo=UTC))
    await service.topup("bob@acme", D("7.25"), reference="bob-1")
    await service.topup("bob@acme", D("7.25"), reference="bob-1")  # the same payment again: no change
    await service.topup("acme/matadi", D("3"), reference="site-1")
    await service.topup("acme", D("100"), reference="tenant-1")
    record = call(MON_10, 120)
    await service.call_ended(record)
    await service.call_ended(record)  # re-sent: charged once
    await service.call_ended(call(MON_10, 61, account="bob@acme", site="matadi"))
    await service.call_ended(call(MON_10, 30, account="carol@zenith", site="lagos"))
    service.tariffs = TariffBook({"cn": peak_offpeak("0.10", "0.05", first=60, then=1)})
    rerated = await service.rerate(tenant="acme")  # refunds and new charges
    assert rerated.calls == 2

    expected = {
        "alice@acme": -200_000,
        "bob@acme": 7_250_000 - 100_000,
        "acme/kinshasa": -200_000,
        "acme/matadi": 7_250_000 + 3_000_000 - 100_000,
        "acme": 100_000_000 + 7_250_000 + 3_000_000 - 100_000 - 200_000,
        "carol@zenith": -200_000,
        "zenith/lagos": -200_000,
        "zenith": -200_000,
    }
    for account_id, amount in expected.items():
        account = await service.account(account_id)
        assert await service.store.balance(account) == amount == await _summed(service.store, account), account_id


@pytest.fixture(params=["sqlite", "postgresql"])
async def reopened(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Awaitable[LedgerStore]]:
    """Opens a new store on one database each time it is called (a restart)."""
    if request.param == "sqlite":
        return lambda: open_store("sqlite", sqlite_path=tmp_path / "billing.db")
    dsn = await fresh_postgres_db(request.getfixturevalue("postgres"))
    return lambda: open_store("postgresql", postgres_dsn=dsn)


async def test_a_ledger_kept_before_balances_existed_is_summed_once_when_opened(
    reopened: Callable[[], Awaitable[LedgerStore]], book: TariffBook, clock: FakeClock
) -> None:
    old = await reopened()
    try:
        service = BillingService(old, book, BillingConfig(), clock)
        await alice(service)
        await service.topup("alice@acme", D("20"), reference="pay-1")
        await service.call_ended(call(MON_10, 125))
        await service.topup("acme/kinshasa", D("1"), reference="pay-2")

        async def drop(tx: Tx) -> None:  # what a database from before the table looks like
            await tx.execute("DROP TABLE billing_balances")

        await old.db.run(drop)
    finally:
        await old.close()
    for _start in range(2):  # summed once: a second start must not add the history again
        store = await reopened()
        try:
            for account_id, amount in (("alice@acme", 19_580_000), ("acme/kinshasa", 20_580_000), ("acme", 20_580_000)):
                account = (await store.get_accounts([account_id]))[account_id]
                assert await store.balance(account) == amount == await _summed(store, account)
        finally:
            await store.close()


async def test_the_last_hours_spend_reads_only_that_hour_at_every_level(tmp_path: Path) -> None:
    """Hourly limits are checked on every call: each scope's query must range over ``at_us``
    in an index, not read the account's (or the whole tenant's) history."""
    store = await open_store("sqlite", sqlite_path=tmp_path / "billing.db")
    try:
        levels = [
            Account("alice@acme", "user", "acme", "kin"),
            Account("acme/kin", "site", "acme", "kin"),
            Account("acme", "tenant", "acme"),
        ]
        for account in levels:
            sql, args = spent_since_sql(account)

            async def plan(tx: Tx, sql: str = sql, args: tuple[object, ...] = args) -> list[Row]:
                return await tx.fetch(f"EXPLAIN QUERY PLAN {sql}", *args, 0)

            details = " ".join(str(row[-1]) for row in await store.db.run(plan, write=False))
            assert "USING INDEX" in details and "at_us>?" in details, (account.level, details)
    finally:
        await store.close()


async def test_a_known_chains_view_is_one_statement_and_reads_what_a_full_read_does(
    reopened: Callable[[], Awaitable[LedgerStore]], book: TariffBook, clock: FakeClock
) -> None:
    gateway = await reopened()
    try:
        service = BillingService(gateway, book, BillingConfig(), clock)
        await service.ensure_account("alice@acme", site="kin", payment="prepaid", max_spend_per_hour=D("50"))
        await service.ensure_account(
            "acme/kin", payment="postpaid", credit_limit=D("100"), max_spend_per_hour=D("80"), replace_existing=True
        )
        await service.ensure_account("acme", payment="postpaid", credit_limit=D("500"), replace_existing=True)
        await service.set_plan("acme", "cn", datetime(2026, 1, 1, tzinfo=UTC))
        since = to_us(MON_10 - timedelta(hours=1))
        assert await gateway.chain_view("alice@acme", since) is not None  # the chain is known from here on
        await service.topup("alice@acme", D("30"), reference="pay-1")
        await service.call_ended(call(MON_10, 125, site="kin"))
        await service.call_ended(call(MON_10 - timedelta(hours=2), 60, site="kin"))  # outside the hour

        read_rows: list[str] = []
        read_row = gateway.db.read_row

        async def counted(sql: str, *args: object) -> object:
            read_rows.append(sql)
            return await read_row(sql, *args)

        gateway.db.read_row = counted  # type: ignore[method-assign]
        quick = await gateway.chain_view("alice@acme", since)
        assert len(read_rows) == 1  # one statement, the version and the money together
        fresh_store = await reopened()
        try:
            full = await fresh_store.chain_view("alice@acme", since)  # nothing known: the full read
        finally:
            await fresh_store.close()
        assert quick == full and quick is not None
        assert quick.balance == {"alice@acme": 30_000_000 - 420_000 - 200_000, "acme/kin": -620_000 + 30_000_000,
                                 "acme": -620_000 + 30_000_000}  # fmt: skip
        assert quick.spent == {"alice@acme": 420_000, "acme/kin": 420_000}
        # An account changed elsewhere moves the version: the quick read gives way to a full one.
        await service.ensure_account("acme", payment="postpaid", credit_limit=D("1"), replace_existing=True)
        changed = await gateway.chain_view("alice@acme", since)
        assert changed is not None and changed.chain[2].credit_limit == 1_000_000
    finally:
        await gateway.close()
