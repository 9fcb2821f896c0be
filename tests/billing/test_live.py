"""Live control against real stores (SQLite, PostgreSQL) and real live-spend back-ends (memory, Redis).

Time is a fake clock moved by the test; ``tick()`` does what the timer would.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from billing.config import BillingConfig
from billing.live.controller import CreditExhausted, GrantExtended, LiveBilling, LiveEvent
from billing.live.spend import LiveSpend, MemoryLiveSpend, RedisLiveSpend
from billing.service import BillingService
from billing.store.ledger import LedgerStore
from billing.store.open import open_store
from billing.tariff_files import TariffBook
from billing.timeutil import from_us
from gateway.cdr import CallRecord
from tests.billing.conftest import FakeClock
from tests.billing.records import call
from tests.billing.tariffs import flat

D = Decimal
T0 = datetime(2026, 10, 5, 2, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["memory", "redis"])
async def spend(request: pytest.FixtureRequest) -> AsyncIterator[LiveSpend]:
    if request.param == "memory":
        yield MemoryLiveSpend()
        return
    s = RedisLiveSpend.from_url(request.getfixturevalue("redis_url"), prefix=f"t{secrets.token_hex(4)}:")
    try:
        yield s
    finally:
        await s.aclose()


def make_live(
    store: LedgerStore, spend: LiveSpend, clock: FakeClock, node: str = "kinshasa-gw", **cfg: object
) -> LiveBilling:
    config = BillingConfig(**{"grant_s": 300, "renew_before_s": 30, "checkpoint_interval_s": 10, **cfg})  # type: ignore[arg-type]
    service = BillingService(store, TariffBook({"flat": flat("0.60", 1)}), config, clock)
    return LiveBilling(service, spend, node)


async def prepaid(live: LiveBilling, account: str = "alice@acme", credit: str = "1.00") -> None:
    s = live.service
    await s.ensure_account(account, site="kinshasa", payment="prepaid")
    await s.set_plan("acme", "flat", datetime(2026, 1, 1, tzinfo=UTC))
    await s.topup(account, D(credit), reference=f"{account}-initial")


def answered(at: datetime, account: str = "alice@acme") -> CallRecord:
    return replace(call(at, 0, account=account), end=at)


def drain(live: LiveBilling) -> list[LiveEvent]:
    out: list[LiveEvent] = []
    while not live.events.empty():
        out.append(live.events.get_nowait())
    return out


async def test_prepaid_credit_runs_out_mid_call(store: LedgerStore, spend: LiveSpend, clock: FakeClock) -> None:
    live = make_live(store, spend, clock)
    await prepaid(live)
    auth = await live.authorize("alice@acme", "+8613800000000", "voice", T0)
    assert (auth.allowed, auth.max_duration_s) == (True, 100)  # 1.00 at 0.01/s
    record = answered(T0)
    granted = await live.call_answered(record)
    assert granted.allowed and granted.max_duration_s == 100
    assert granted.hang_up_at == T0 + timedelta(seconds=99.5)
    clock.now = T0 + timedelta(seconds=99)
    await live.tick()
    assert not [e for e in drain(live) if isinstance(e, CreditExhausted)]
    clock.now = T0 + timedelta(seconds=99.5)
    await live.tick()
    events = [e for e in drain(live) if isinstance(e, CreditExhausted)]
    assert events == [CreditExhausted(record.session_id, "a", "alice@acme", clock.now)]
    # The B2BUA hangs up; its BYE takes 0.2 s.
    rating = await live.call_ended(replace(record, end=T0 + timedelta(seconds=99.7)))
    assert (rating.billed_s, rating.charged) == (
        100,
        1_000_000,
    )  # within one increment of the credit, not above
    assert (await live.service.balance("alice@acme")).available == 0
    refused = await live.authorize("alice@acme", "+8613800000000", "voice", clock.now)
    assert (refused.allowed, refused.reason) == (False, "no credit at alice@acme")


async def test_a_late_hang_up_is_never_charged_above_the_credit(
    store: LedgerStore, spend: LiveSpend, clock: FakeClock
) -> None:
    live = make_live(store, spend, clock)
    await prepaid(live)
    record = answered(T0)
    await live.call_answered(record)
    rating = await live.call_ended(replace(record, end=T0 + timedelta(seconds=103)))
    assert (rating.cost, rating.charged) == (1_030_000, 1_000_000)
    assert "capped" in rating.reason
    assert (await live.service.balance("alice@acme")).balance == 0


async def test_slices_are_renewed_while_credit_lasts(store: LedgerStore, spend: LiveSpend, clock: FakeClock) -> None:
    live = make_live(store, spend, clock, grant_s=60, renew_before_s=10)
    await prepaid(live, credit="1.50")  # 150 s
    record = answered(T0)
    assert (await live.call_answered(record)).max_duration_s == 60
    usage = await spend.usage(["alice@acme", "acme"])
    assert usage["alice@acme"].reserved == 600_000 and usage["acme"].open_calls == 1
    for second in (50, 110):
        clock.now = T0 + timedelta(seconds=second)
        await live.tick()
    extended = [e for e in drain(live) if isinstance(e, GrantExtended)]
    assert [(e.hang_up_at - T0).total_seconds() for e in extended] == [119.5, 149.5]
    assert [e.final for e in extended] == [False, True]
    assert (await spend.usage(["alice@acme"]))["alice@acme"].reserved == 1_500_000
    clock.now = T0 + timedelta(seconds=149.5)
    await live.tick()
    assert [type(e) for e in drain(live)] == [CreditExhausted]
    await live.call_ended(replace(record, end=T0 + timedelta(seconds=149.6)))
    assert await spend.usage(["alice@acme"]) == {"alice@acme": type(usage["acme"])(0, 0)}


async def test_two_gateways_share_a_tenant_balance_without_spending_it_twice(
    store: LedgerStore, spend: LiveSpend, clock: FakeClock
) -> None:
    site_a = make_live(store, spend, clock, node="kinshasa-gw", grant_s=60, renew_before_s=10)
    site_b = make_live(store, spend, clock, node="kampala-gw", grant_s=60, renew_before_s=10)
    s = site_a.service
    await s.ensure_account("acme", payment="prepaid", replace_existing=True)
    await s.set_plan("acme", "flat", datetime(2026, 1, 1, tzinfo=UTC))
    await s.topup("acme", D("2.00"), reference="acme-1")  # 200 s for the whole company
    for user in ("alice@acme", "bob@acme"):
        await s.ensure_account(user, site="kinshasa", payment="postpaid")
    a, b = answered(T0, "alice@acme"), answered(T0, "bob@acme")
    assert (await site_a.call_answered(a)).max_duration_s == 60
    assert (await site_b.call_answered(b)).max_duration_s == 60
    for second in range(0, 200, 5):
        clock.now = T0 + timedelta(seconds=second)
        await site_a.tick()
        await site_b.tick()
    cut = [e for live in (site_a, site_b) for e in drain(live) if isinstance(e, CreditExhausted)]
    assert len(cut) == 2
    ra = await site_a.call_ended(replace(a, end=cut[0].at))
    rb = await site_b.call_ended(replace(b, end=cut[1].at))
    assert ra.charged + rb.charged == 2_000_000
    assert (await s.balance("acme")).available == 0


async def end_after_10_s(live: LiveBilling, record: CallRecord) -> None:
    await live.call_ended(replace(record, end=T0 + timedelta(seconds=10)))


async def refused_at_the_site_limit(live: LiveBilling, account: str) -> bool:
    verdict = await live.authorize(account, "+86138", "voice", T0)
    return (verdict.allowed, verdict.reason) == (False, "concurrent call limit reached at acme/kinshasa")


async def test_concurrent_call_limits_apply_at_every_level(
    store: LedgerStore, spend: LiveSpend, clock: FakeClock
) -> None:
    live = make_live(store, spend, clock)
    await prepaid(live, credit="10")
    await prepaid(live, account="bob@acme", credit="10")
    await live.service.ensure_account("acme/kinshasa", max_concurrent=1, replace_existing=True)
    first = answered(T0)
    assert (await live.call_answered(first)).allowed
    assert await refused_at_the_site_limit(live, "bob@acme")
    late = await live.call_answered(answered(T0, "bob@acme"))
    assert (late.allowed, late.reason) == (False, "concurrent call limit reached at acme/kinshasa")
    await end_after_10_s(live, first)
    assert (await live.authorize("bob@acme", "+86138", "voice", T0)).allowed


async def test_a_limit_set_during_calls_of_an_unlimited_chain_counts_the_calls_answered_after_it(
    store: LedgerStore, spend: LiveSpend, clock: FakeClock
) -> None:
    # With no limit anywhere in the chain, live spend never hears of a call (no round trip
    # to a shared Redis); a limit counts what is answered once it exists.
    live = make_live(store, spend, clock)
    s = live.service
    for who in ("alice@acme", "bob@acme", "carol@acme"):
        await s.ensure_account(who, site="kinshasa", payment="postpaid")
    await s.set_plan("acme", "flat", datetime(2026, 1, 1, tzinfo=UTC))
    before = answered(T0)
    assert (await live.call_answered(before)).allowed
    assert (await spend.usage(["acme/kinshasa"]))["acme/kinshasa"].open_calls == 0
    await s.ensure_account("acme/kinshasa", max_concurrent=1, replace_existing=True)
    after = answered(T0, "bob@acme")
    assert (await live.call_answered(after)).allowed  # the call from before does not count
    assert (await spend.usage(["acme/kinshasa"]))["acme/kinshasa"].open_calls == 1
    assert await refused_at_the_site_limit(live, "carol@acme")
    await end_after_10_s(live, before)
    assert (await spend.usage(["acme/kinshasa"]))["acme/kinshasa"].open_calls == 1  # released nothing
    await end_after_10_s(live, after)
    assert (await live.authorize("carol@acme", "+86138", "voice", T0)).allowed


async def test_an_unrated_call_of_a_prepaid_account_reserves_nothing_so_is_not_counted(
    store: LedgerStore, spend: LiveSpend, clock: FakeClock
) -> None:
    live = make_live(store, spend, clock)
    await live.service.ensure_account("dave@other", site="kinshasa", payment="prepaid")  # no plan: unrated
    record = answered(T0, "dave@other")
    verdict = await live.call_answered(record)
    assert verdict.allowed
    assert (await spend.usage(["dave@other"]))["dave@other"].open_calls == 0
    rating = await live.call_ended(replace(record, end=T0 + timedelta(seconds=10)))
    assert rating.status == "unrated"
    assert await spend.calls_of("kinshasa-gw") == []


async def test_the_hourly_spend_limit_guards_against_toll_fraud(
    store: LedgerStore, spend: LiveSpend, clock: FakeClock
) -> None:
    live = make_live(store, spend, clock)
    s = live.service
    await s.ensure_account("alice@acme", site="kinshasa", payment="postpaid", max_spend_per_hour=D("1.00"))
    await s.set_plan("acme", "flat", datetime(2026, 1, 1, tzinfo=UTC))
    assert (await live.authorize("alice@acme", "+86138", "voice", T0)).max_duration_s == 100
    await s.call_ended(call(T0 - timedelta(minutes=30), 60))  # 0.60 spent half an hour ago
    assert (await live.authorize("alice@acme", "+86138", "voice", T0)).max_duration_s == 40
    await s.call_ended(call(T0 - timedelta(minutes=20), 40))
    refused = await live.authorize("alice@acme", "+86138", "voice", T0)
    assert (refused.allowed, refused.reason) == (False, "hourly spend limit reached at alice@acme")
    clock.now = T0 + timedelta(hours=1)
    assert (await live.authorize("alice@acme", "+86138", "voice", clock.now)).allowed


async def test_unknown_accounts_and_unrated_destinations_are_refused(
    store: LedgerStore, spend: LiveSpend, clock: FakeClock
) -> None:
    live = make_live(store, spend, clock, authorize_unrated=False)
    assert (await live.authorize("mallory@acme", "+86", "voice", T0)).reason == "unknown account mallory@acme"
    await live.service.ensure_account("carol@acme", site="kinshasa", payment="postpaid")
    assert (await live.authorize("carol@acme", "+86", "voice", T0)).reason == "no rate plan for carol@acme"
    lenient = make_live(store, spend, clock, authorize_unrated=True)
    auth = await lenient.authorize("carol@acme", "+86", "voice", T0)
    assert (auth.allowed, auth.max_duration_s, auth.reason) == (
        True,
        14400,
        "unrated: no rate plan for carol@acme",
    )


async def test_after_a_crash_an_open_call_is_closed_at_its_last_checkpoint_once(
    store: LedgerStore, spend: LiveSpend, clock: FakeClock
) -> None:
    live = make_live(store, spend, clock)
    await prepaid(live, credit="10")
    record = answered(T0)
    await live.call_answered(record)
    clock.now = T0 + timedelta(seconds=25)
    await live.tick()  # checkpoint at 25 s (due since 10 s)
    clock.now = T0 + timedelta(seconds=33)
    # The process dies here: no call_ended. A new process on the same node recovers.
    restarted = make_live(store, spend, clock)
    ratings = await restarted.recover()
    assert [(r.session_id, r.billed_s, r.charged) for r in ratings] == [(record.session_id, 25, 250_000)]
    assert await restarted.recover() == []
    # The call's record, should it arrive after all, is recognised.
    again = await restarted.call_ended(replace(record, end=T0 + timedelta(seconds=33)))
    assert again.charged == 250_000
    assert (await restarted.service.balance("alice@acme")).balance == 10_000_000 - 250_000
    assert await spend.calls_of("kinshasa-gw") == []


async def test_kill_9_mid_call_then_restart_charges_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "billing.db"
    store = await open_store("sqlite", sqlite_path=db)
    setup = BillingService(store, TariffBook({"flat": flat("0.60", 1)}), BillingConfig())
    await setup.ensure_account("alice@acme", site="kinshasa", payment="prepaid")
    await setup.set_plan("acme", "flat", datetime(2026, 1, 1, tzinfo=UTC))
    await setup.topup("alice@acme", D("100"))
    session_id = secrets.token_hex(16)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.billing.live_worker", str(db), session_id,
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert worker.stdout is not None
        line = await asyncio.wait_for(worker.stdout.readline(), 30)
        assert line.startswith(b"answered True")
        checkpoints = [int((await asyncio.wait_for(worker.stdout.readline(), 30)).split()[1]) for _ in range(2)]
        worker.send_signal(signal.SIGKILL)
        await asyncio.wait_for(worker.wait(), 10)
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
        # Read to EOF so the transport closes now: left to the garbage collector, it would
        # close its descriptor numbers later, when they may belong to another event loop.
        if worker.stdout is not None:
            await asyncio.wait_for(worker.stdout.read(), 10)
    assert worker.returncode == -signal.SIGKILL
    restarted = LiveBilling(setup, MemoryLiveSpend(), "kinshasa-gw")
    ratings = await restarted.recover()
    assert len(ratings) == 1 and ratings[0].status == "rated"
    open_rows = await store.open_calls("kinshasa-gw")
    assert open_rows == []
    entries = await store.ledger(await setup.account("alice@acme"))
    charges = [e for e in entries if e.kind == "charge"]
    assert len(charges) == 1 and charges[0].session_id == session_id
    # Closed no earlier than the last checkpoint we saw committed.
    stored = await store.get_call(session_id, "a")
    assert stored is not None and stored[0].end >= from_us(checkpoints[-1])
    assert await restarted.recover() == []
    await store.close()


async def test_the_timer_ends_a_call_when_credit_runs_out_in_real_time(tmp_path: Path) -> None:
    store = await open_store("sqlite", sqlite_path=tmp_path / "b.db")
    config = BillingConfig(cutoff_guard_ms=500)
    service = BillingService(store, TariffBook({"flat": flat("0.60", 1)}), config)
    live = LiveBilling(service, MemoryLiveSpend(), "kinshasa-gw")
    await service.ensure_account("alice@acme", site="kinshasa", payment="prepaid")
    await service.set_plan("acme", "flat", datetime(2026, 1, 1, tzinfo=UTC))
    await service.topup("alice@acme", D("0.02"))  # two seconds
    live.start()
    try:
        now = datetime.now(UTC)
        record = replace(call(now, 0), end=now)
        auth = await live.call_answered(record)
        assert (auth.allowed, auth.max_duration_s) == (True, 2)
        event = await asyncio.wait_for(live.events.get(), timeout=10)
        assert isinstance(event, CreditExhausted) and event.session_id == record.session_id
        rating = await live.call_ended(replace(record, end=datetime.now(UTC)))
        print(f"cut off {(event.at - now).total_seconds():.3f} s after answer, billed {rating.billed_s} s")
        assert rating.charged <= 20_000
    finally:
        await live.stop()
        await store.close()
