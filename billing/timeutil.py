"""Instants as integer microseconds since the Unix epoch (UTC): exact, and sortable in SQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)


def to_us(instant: datetime) -> int:
    if instant.tzinfo is None:
        raise ValueError("instants must be aware datetimes")
    return (instant - EPOCH) // ONE_US


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def month_bounds(month: str, zone: str) -> tuple[datetime, datetime]:
    """'2026-10' in ``zone`` -> [first instant, first instant of the next month), in UTC."""
    try:
        year, mon = (int(x) for x in month.split("-"))
        first = date(year, mon, 1)
    except ValueError:
        raise ValueError(f"{month!r} is not a month like 2026-10") from None
    nxt = date(year + (mon == 12), mon % 12 + 1, 1)
    tz = ZoneInfo(zone)
    return (
        datetime(first.year, first.month, 1, tzinfo=tz).astimezone(UTC),
        datetime(nxt.year, nxt.month, 1, tzinfo=tz).astimezone(UTC),
    )
