"""The billing service: accounts, rating of ended calls, top-ups, balances, rerating, quotes.

It joins the pure parts (rating core, ``rate_record``) to the store; it owns no
clock (``clock`` is passed in) and no I/O of its own beyond the store.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from billing.accounts import Account, Payment, check_site, normalise_id, parse_account_id
from billing.config import BillingConfig
from billing.errors import AccountError, BillingError, LedgerError, NoRateError
from billing.rating import Tariff, rate_call
from billing.rating.engine import RatedCall
from billing.rating.money import MAX_DECIMALS, to_micros
from billing.rating.numbers import normalize_number
from billing.rating.tariff import Category
from billing.records import Rating, RatingContext, rate_record
from billing.store.ledger import LedgerStore
from billing.tariff_files import TariffBook
from billing.timeutil import to_us
from gateway.cdr import CallRecord

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Balance:
    account: Account
    balance: int  # micro-units, the subtree's ledger sum
    available: int | None  # what may still be spent (None: unlimited)
    spent_last_hour: int


@dataclass(frozen=True)
class RerateResult:
    calls: int
    rated: int
    unrated: int
    charged_before: int
    charged_after: int


class BillingService:
    def __init__(self, store: LedgerStore, tariffs: TariffBook, config: BillingConfig, clock: Clock = utc_now):
        self.store = store
        self.tariffs = tariffs
        self.config = config
        self.clock = clock

    async def _chain_and_plans(self, account_id: str) -> tuple[list[Account], dict[str, list[tuple[int, str]]]] | None:
        # The store keeps chains and plans while the accounts version stands: one small read.
        view = await self.store.chain_view(account_id)
        return None if view is None else (view.chain, view.plans)

    # Accounts.

    async def ensure_account(
        self,
        account_id: str,
        *,
        site: str | None = None,
        payment: Payment | None = None,
        credit_limit: Decimal | None = None,
        max_concurrent: int | None = None,
        max_spend_per_hour: Decimal | None = None,
        replace_existing: bool = False,
    ) -> Account:
        """Create (or with ``replace_existing``, change) an account, creating missing ancestors.

        Ancestors created on the way are postpaid without limits: only limits
        someone set explicitly ever refuse a call.
        """
        account_id = normalise_id(account_id)
        level, tenant, site_of_id = parse_account_id(account_id)
        if level == "user":
            if not site:
                existing = (await self.store.get_accounts([account_id])).get(account_id)
                if existing is None:
                    raise AccountError(f"account {account_id} needs a site")
                site = existing.site
            site = check_site(site)
        else:
            site = site_of_id
        default_payment = payment or (self.config.default_payment if level == "user" else "postpaid")
        limit = credit_limit if credit_limit is not None else (
            self.config.default_credit_limit if level == "user" and default_payment == "postpaid" else None
        )  # fmt: skip
        account = Account(
            id=account_id,
            level=level,
            tenant=tenant,
            site=site if level != "tenant" else "",
            payment=default_payment,
            credit_limit=_micros(limit),
            max_concurrent=max_concurrent,
            max_spend_per_hour=_micros(max_spend_per_hour),
        )
        parents = [(Account(p, *parse_account_id(p)), False) for p in account.parent_ids]
        await self.store.put_accounts([*parents, (account, replace_existing)], to_us(self.clock()))
        return await self.account(account_id)

    async def ensure_trunk_accounts(self) -> None:
        """Create the accounts named by [[billing.trunks]] (postpaid) if they do not exist yet."""
        for trunk in self.config.trunks:
            existing = await self.store.get_accounts([normalise_id(trunk.account)])
            if not existing:
                await self.ensure_account(trunk.account, site=trunk.site, payment="postpaid")

    async def account(self, account_id: str) -> Account:
        account_id = normalise_id(account_id)
        found = (await self.store.get_accounts([account_id])).get(account_id)
        if found is None:
            raise AccountError(f"no account {account_id}")
        return found

    async def chain(self, account: Account) -> list[Account]:
        """The account and its ancestors, leaf first."""
        parents = await self.store.get_accounts(list(account.parent_ids))
        return [account] + [parents[p] for p in account.parent_ids if p in parents]

    async def set_plan(self, account_id: str, tariff: str, active_from: datetime) -> None:
        account = await self.account(account_id)
        if self.tariffs.get(tariff) is None:
            raise BillingError(f"no tariff named {tariff!r} (known: {', '.join(self.tariffs.names()) or 'none'})")
        await self.store.set_plan(account.id, tariff, to_us(active_from))

    async def plan_for(self, chain: list[Account], at: datetime) -> str | None:
        return self.plan_in(chain, await self.store.plans([a.id for a in chain]), at)

    def plan_in(self, chain: list[Account], plans: dict[str, list[tuple[int, str]]], at: datetime) -> str | None:
        at_us = to_us(at)
        for account in chain:
            active = [tariff for start, tariff in plans[account.id] if start <= at_us]
            if active:
                return active[-1]
        return self.config.default_tariff or None

    async def tariff_for(self, account: Account, at: datetime) -> tuple[str | None, Tariff | None]:
        plan = await self.plan_for(await self.chain(account), at)
        return plan, (self.tariffs.get(plan) if plan else None)

    # Rating.

    async def _context(self, record: CallRecord) -> RatingContext:
        try:
            found = await self._chain_and_plans(normalise_id(record.account))
        except AccountError:
            found = None
        return self.context_for(record, found)

    def context_for(
        self, record: CallRecord, found: tuple[list[Account], dict[str, list[tuple[int, str]]]] | None
    ) -> RatingContext:
        """How ``record`` is rated, given its account's chain and plans (None: no such account)."""
        account: Account | None = None
        plan: str | None = None
        tariff: Tariff | None = None
        if found is not None:
            chain, plans = found
            account = chain[0]
            plan = self.plan_in(chain, plans, record.answer or record.start)
            tariff = self.tariffs.get(plan) if plan else None
        return RatingContext(
            account,
            plan,
            tariff,
            self.config.currency,
            self.config.international_prefix,
            self.config.rated_leg,
        )

    async def rate(
        self, record: CallRecord, run: int = 1, cap: int | None = None, context: RatingContext | None = None
    ) -> Rating:
        """Rate without storing (what ``call_ended`` would charge); ``context``: as read already."""
        if context is None:
            context = await self._context(record)
        return rate_record(record, context, run, self.clock(), cap)

    async def call_ended(
        self,
        record: CallRecord,
        cap: int | None = None,
        *,
        close_open: bool = False,
        live: bool = False,
        context: RatingContext | None = None,
    ) -> tuple[Rating, bool]:
        """Rate and store a finished call; (its current rating, whether this record was new).

        A record already stored (same session and leg) changes nothing: the
        rating it got the first time is returned. With ``close_open`` the call's
        live-control checkpoint is removed in the same transaction. ``live``: see
        ``LedgerStore.store_call`` (its write may share a commit with other calls'). ``context``:
        the rating context live billing took when the call was answered (else it is read).
        """
        rating = await self.rate(record, 1, cap, context)
        return await self.store.store_call(record, rating, close_open=close_open, live=live)

    async def rerate(
        self,
        *,
        tenant: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        only_unrated: bool = False,
    ) -> RerateResult:
        """Rate again every call that started in [start, end): refund the old charge, take the new.

        The old run and its charge stay in the ledger next to the refund.
        """
        start_us = to_us(start) if start else 0
        end_us = to_us(end) if end else 2**62
        statuses = ("unrated",) if only_unrated else ("rated", "unrated")
        calls = rated = unrated = before = after = 0
        # Paged by (start, session, leg), which rerating never changes: streaming while
        # rerating visits every call once, and memory stays flat for any month.
        pending = self.store.stream_calls(tenant=tenant, start_us=start_us, end_us=end_us, statuses=statuses)
        async for record, current in pending:
            cap = current.charged if "capped" in current.reason else None
            rating = await self.rate(record, current.run + 1, cap)
            if not await self.store.add_run(record, rating, current):
                continue
            calls += 1
            before += current.charged
            after += rating.charged
            rated += rating.status == "rated"
            unrated += rating.status == "unrated"
        return RerateResult(calls, rated, unrated, before, after)

    # Money.

    async def topup(self, account_id: str, amount: Decimal, reference: str | None = None, note: str = "") -> bool:
        account = await self.account(account_id)
        micros = _micros(amount)
        if micros is None or micros <= 0:
            raise LedgerError("a top-up must be a positive amount")
        ref = reference or uuid.uuid4().hex
        return await self.store.topup(account, micros, ref, note or "top-up", to_us(self.clock()))

    async def balance(self, account_id: str) -> Balance:
        account = await self.account(account_id)
        balance = await self.store.balance(account)
        credit = account.credit
        hour_ago = to_us(self.clock() - timedelta(hours=1))
        return Balance(
            account,
            balance,
            None if credit is None else balance + credit,
            await self.store.spent_since(account, hour_ago),
        )

    async def quote(
        self, account_id: str, to: str, category: Category, start: datetime, duration: timedelta
    ) -> tuple[RatedCall, Tariff]:
        account = await self.account(account_id)
        plan, tariff = await self.tariff_for(account, start)
        if plan is None:
            raise NoRateError(f"account {account.id} has no rate plan at {start.isoformat()}")
        if tariff is None:
            raise NoRateError(f"the rate plan of {account.id} names tariff {plan!r}, which is not loaded")
        number = normalize_number(to, self.config.international_prefix)
        return rate_call(tariff, number, category, start, duration), tariff


def _micros(amount: Decimal | None) -> int | None:
    if amount is None:
        return None
    if amount.as_tuple().exponent < -MAX_DECIMALS:  # type: ignore[operator]
        raise LedgerError(f"{amount}: at most {MAX_DECIMALS} decimal places")
    return to_micros(amount)
