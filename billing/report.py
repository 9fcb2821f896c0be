"""Monthly totals of one tenant, built by streaming its calls once (memory: one row per site and category)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from billing.rating.money import from_micros
from billing.records import Rating
from billing.store.ledger import LedgerStore
from billing.timeutil import month_bounds, to_us
from gateway.cdr import CallRecord

EXPORTED = ("rated", "free", "unrated")  # audit legs of other gateways would count calls twice


@dataclass
class Totals:
    calls: int = 0
    answered: int = 0
    seconds_us: int = 0  # talk time, exact
    billed_s: int = 0
    charged: int = 0  # micro-units

    def add(self, record: CallRecord, rating: Rating) -> None:
        self.calls += 1
        self.answered += record.answer is not None
        self.seconds_us += rating.duration_us
        self.billed_s += rating.billed_s
        self.charged += rating.charged

    @property
    def minutes(self) -> Decimal:
        return Decimal(self.seconds_us) / 60_000_000

    def per_minute(self) -> Decimal | None:
        """Average price of a minute of talk (charged / talk minutes), 4 decimals."""
        if not self.seconds_us:
            return None
        return (from_micros(self.charged) / self.minutes).quantize(Decimal("0.0001"))


@dataclass
class MonthReport:
    tenant: str
    month: str
    zone: str
    start: datetime
    end: datetime
    total: Totals = field(default_factory=Totals)
    by_site_category: dict[tuple[str, str], Totals] = field(default_factory=dict)
    daily_seconds_us: dict[date, int] = field(default_factory=dict)
    unrated: int = 0
    unrated_examples: list[tuple[str, str, str]] = field(default_factory=list)  # (session, account, reason)
    currency: str = "CNY"

    def add(self, record: CallRecord, rating: Rating) -> None:
        self.total.add(record, rating)
        self.by_site_category.setdefault((rating.site, record.category), Totals()).add(record, rating)
        day = record.start.astimezone(ZoneInfo(self.zone)).date()
        self.daily_seconds_us[day] = self.daily_seconds_us.get(day, 0) + rating.duration_us
        if rating.status == "unrated":
            self.unrated += 1
            if len(self.unrated_examples) < 20:
                self.unrated_examples.append((record.session_id, rating.account, rating.reason))
        if rating.currency:
            self.currency = rating.currency

    def days(self) -> list[date]:
        first = self.start.astimezone(ZoneInfo(self.zone)).date()
        last = (self.end - timedelta(microseconds=1)).astimezone(ZoneInfo(self.zone)).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    def sites(self) -> list[str]:
        return sorted({s for s, _c in self.by_site_category})


async def stream_month(
    store: LedgerStore, tenant: str, month: str, zone: str
) -> AsyncIterator[tuple[CallRecord, Rating]]:
    start, end = month_bounds(month, zone)
    async for row in store.stream_calls(tenant=tenant, start_us=to_us(start), end_us=to_us(end), statuses=EXPORTED):
        yield row


async def month_report(store: LedgerStore, tenant: str, month: str, zone: str) -> MonthReport:
    start, end = month_bounds(month, zone)
    report = MonthReport(tenant, month, zone, start, end)
    async for record, rating in stream_month(store, tenant, month, zone):
        report.add(record, rating)
    return report
