"""Tariffs for the tests, built in code so each example shows the numbers it relies on."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from billing.rating import Destination, PeriodRule, Rate, RateGroup, Tariff
from billing.rating.money import RoundingMethod

D = Decimal
ALL_WEEK = PeriodRule("any")
PEAK = PeriodRule("peak", days=frozenset(range(5)), ranges=((8 * 60, 19 * 60),))
OFFPEAK = PeriodRule("offpeak")
HOLIDAY = PeriodRule("holiday", holiday=True)


def groups(price: str, first: int, then: int | None = None, unit: int = 60) -> tuple[RateGroup, ...]:
    """Rate groups for an "first/then" increment such as 60/60, 30/6 or 60/1."""
    head = RateGroup(0, D(price), unit, first)
    if then is None or then == first:
        return (head,)
    return (head, RateGroup(first, D(price), unit, then))


def flat(
    price: str,
    first: int = 60,
    then: int | None = None,
    *,
    rounding: RoundingMethod = "half_up",
    decimals: int = 2,
    connect_fee: str = "0",
    min_cost: str = "0",
    max_cost: str | None = None,
    prefixes: tuple[str, ...] = ("",),
) -> Tariff:
    """One price all week long."""
    rate = Rate("r", groups(price, first, then))
    dest = Destination(
        "anywhere",
        prefixes,
        {"any": rate},
        connect_fee=D(connect_fee),
        min_cost=D(min_cost),
        max_cost=None if max_cost is None else D(max_cost),
    )
    return Tariff("flat", (ALL_WEEK,), (dest,), rounding=rounding, decimals=decimals)


def peak_offpeak(peak: str = "0.20", offpeak: str = "0.10", first: int = 1, then: int | None = None) -> Tariff:
    """Weekdays 08:00-19:00 peak, other times off-peak, 1 October a holiday at the off-peak price / 2."""
    half = str(D(offpeak) / 2)
    dest = Destination(
        "China",
        ("86",),
        {
            "peak": Rate("cn-peak", groups(peak, first, then)),
            "offpeak": Rate("cn-off", groups(offpeak, first, then)),
            "holiday": Rate("cn-holiday", groups(half, first, then)),
        },
    )
    return Tariff(
        "cn",
        (HOLIDAY, PEAK, OFFPEAK),
        (dest,),
        holidays=frozenset({date(2026, 10, 1)}),
    )
