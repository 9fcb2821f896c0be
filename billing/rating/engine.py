"""Rating: the exact cost of one call, and the longest call a budget pays for.

A call is walked increment by increment, but in *segments*: stretches where the
period and the rate group stay the same, so an hour at 1/1 is one step, not
3600. An increment is priced entirely at the period and group in force where it
*starts*; a call crossing from peak into off-peak is split there, and the
increment that straddles the boundary is still a peak increment.

Offsets are integer microseconds from the answer, so nothing is lost to floats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from billing.errors import NoRateError
from billing.rating.money import RoundingMethod, round_exact, show_precise
from billing.rating.tariff import Category, Destination, Rate, Tariff

US = 1_000_000
_ONE_US = timedelta(microseconds=1)

Adjustment = Literal["", "minimum", "maximum"]


@dataclass(frozen=True)
class Span:
    """Consecutive increments priced alike."""

    period: str
    rate: str
    group: int
    offset_s: int
    increments: int
    increment_s: int
    price: Decimal
    unit_s: int
    cost: Fraction

    @property
    def seconds(self) -> int:
        return self.increments * self.increment_s


@dataclass(frozen=True)
class RatedCall:
    tariff: str
    tariff_version: str
    currency: str
    number: str
    category: Category
    destination: str
    prefix: str
    answer: datetime
    duration_us: int
    billed_s: int
    connect_fee: Decimal
    spans: tuple[Span, ...]
    raw: Fraction  # connect fee + spans
    precise: Fraction  # raw after the minimum and maximum, before rounding
    adjustment: Adjustment
    cost: Decimal  # precise, rounded once
    rounding: RoundingMethod
    decimals: int

    @property
    def precise_decimal(self) -> Decimal:
        return show_precise(self.precise)


def _final(dest: Destination, tariff: Tariff, raw: Fraction) -> tuple[Fraction, Adjustment, Decimal]:
    precise = raw
    adjustment: Adjustment = ""
    if raw < dest.min_cost:
        precise, adjustment = Fraction(dest.min_cost), "minimum"
    elif dest.max_cost is not None and raw > dest.max_cost:
        precise, adjustment = Fraction(dest.max_cost), "maximum"
    return precise, adjustment, round_exact(precise, tariff.decimals, tariff.rounding)


def _lookup(tariff: Tariff, number: str, category: Category) -> tuple[Destination, str]:
    found = tariff.find(number, category)
    if found is None:
        raise NoRateError(f"tariff {tariff.name!r} has no {category} destination for {number!r}")
    return found


def _segment(tariff: Tariff, dest: Destination, answer: datetime, t_us: int) -> tuple[str, Rate, int, int]:
    """Period, rate, group index at offset ``t_us``, and the offset where any of them may change."""
    instant = answer + timedelta(microseconds=t_us)
    period = tariff.period_at(instant)
    rate = dest.rates.get(period)
    if rate is None:
        raise NoRateError(f"tariff {tariff.name!r}: destination {dest.name!r} has no rate for period {period!r}")
    index = 0
    for i, group in enumerate(rate.groups):
        if group.start_s * US <= t_us:
            index = i
    change = (tariff.next_change(instant) - answer) // _ONE_US
    if index + 1 < len(rate.groups):
        change = min(change, rate.groups[index + 1].start_s * US)
    return period, rate, index, change


def rate_call(tariff: Tariff, number: str, category: Category, answer: datetime, duration: timedelta) -> RatedCall:
    """Price an answered call of ``duration`` from ``answer`` (an aware datetime) to ``number``."""
    dest, prefix = _lookup(tariff, number, category)
    duration_us = max(0, duration // _ONE_US)
    spans: list[Span] = []
    t = 0
    raw = Fraction(dest.connect_fee)
    while t < duration_us:
        period, rate, index, change = _segment(tariff, dest, answer, t)
        group = rate.groups[index]
        step = group.increment_s * US
        n = -(-(min(change, duration_us) - t) // step)
        cost = group.increment_cost * n
        last = spans[-1] if spans else None
        if last and (last.period, last.rate, last.group) == (period, rate.name, index):
            spans[-1] = Span(
                period,
                rate.name,
                index,
                last.offset_s,
                last.increments + n,
                group.increment_s,
                group.price,
                group.unit_s,
                last.cost + cost,
            )
        else:
            spans.append(Span(period, rate.name, index, t // US, n, group.increment_s, group.price, group.unit_s, cost))
        raw += cost
        t += n * step
    precise, adjustment, rounded = _final(dest, tariff, raw)
    return RatedCall(
        tariff=tariff.name,
        tariff_version=tariff.version,
        currency=tariff.currency,
        number=number,
        category=category,
        destination=dest.name,
        prefix=prefix,
        answer=answer,
        duration_us=duration_us,
        billed_s=t // US,
        connect_fee=dest.connect_fee,
        spans=tuple(spans),
        raw=raw,
        precise=precise,
        adjustment=adjustment,
        cost=rounded,
        rounding=tariff.rounding,
        decimals=tariff.decimals,
    )


def _largest(n_max: int, fits: Callable[[int], bool]) -> int:
    """Largest n in [0, n_max] with fits(n), given fits(0) and fits monotonic (true then false)."""
    lo, hi = 0, n_max
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _fits_after(fits: Callable[[Fraction], bool], base: Fraction, step_cost: Fraction) -> Callable[[int], bool]:
    return lambda k: fits(base + step_cost * k)


def max_duration(tariff: Tariff, number: str, category: Category, answer: datetime, budget: Decimal, cap_s: int) -> int:
    """The longest call, in whole seconds up to ``cap_s``, whose rounded cost stays within ``budget``.

    The answer is an increment boundary D: any call lasting at most D seconds
    costs at most ``budget``. 0 means not even the connect fee (or minimum) and a
    first increment fit.
    """
    dest, _prefix = _lookup(tariff, number, category)

    def fits(raw: Fraction) -> bool:
        return _final(dest, tariff, raw)[2] <= budget

    cum = Fraction(dest.connect_fee)
    if not fits(cum):
        return 0
    cap_us = cap_s * US
    t = 0
    while t < cap_us:
        _period, rate, index, change = _segment(tariff, dest, answer, t)
        group = rate.groups[index]
        step = group.increment_s * US
        # Increments that start before the change, and end by the cap.
        n_seg = min(-(-(change - t) // step), (cap_us - t) // step)
        if n_seg == 0:
            break
        price = group.increment_cost
        n = _largest(n_seg, _fits_after(fits, cum, price))
        t += n * step
        cum += price * n
        if n < n_seg:
            break
    return t // US
