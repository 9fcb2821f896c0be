"""Properties of rating that hold for every tariff, call start and duration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.rating import ROUNDING_METHODS, Destination, Rate, RateGroup, Tariff, max_duration, rate_call
from billing.rating.money import round_exact
from tests.billing.tariffs import ALL_WEEK, HOLIDAY, OFFPEAK, PEAK

prices = st.decimals(min_value=0, max_value=5, places=4)
increments = st.sampled_from([1, 6, 10, 30, 60])
starts = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC))
durations = st.integers(min_value=0, max_value=6 * 3600 * 1000).map(lambda ms: timedelta(milliseconds=ms))


@st.composite
def rates(draw: st.DrawFn, name: str = "r") -> Rate:
    n = draw(st.integers(1, 3))
    starts_s = sorted(draw(st.sets(st.integers(1, 600), min_size=n - 1, max_size=n - 1)))
    groups = [
        RateGroup(start, draw(prices), draw(st.sampled_from([1, 60])), draw(increments)) for start in [0, *starts_s]
    ]
    return Rate(name, tuple(groups))


@st.composite
def tariffs(draw: st.DrawFn) -> Tariff:
    connect = draw(st.decimals(min_value=0, max_value=1, places=2))
    minimum = draw(st.decimals(min_value=0, max_value=1, places=2))
    maximum = draw(st.none() | st.decimals(min_value=2, max_value=50, places=2))
    dest = Destination(
        "d",
        ("",),
        {"peak": draw(rates("p")), "offpeak": draw(rates("o")), "holiday": draw(rates("h"))},
        connect_fee=connect,
        min_cost=minimum,
        max_cost=maximum,
    )
    return Tariff(
        "t",
        (HOLIDAY, PEAK, OFFPEAK),
        (dest,),
        timezone=draw(st.sampled_from(["Asia/Shanghai", "Africa/Kinshasa", "Europe/Paris"])),
        rounding=draw(st.sampled_from(ROUNDING_METHODS)),
        decimals=draw(st.integers(0, 6)),
        holidays=frozenset(draw(st.sets(st.dates(datetime(2026, 1, 1).date(), datetime(2027, 12, 31).date())))),
    )


@settings(max_examples=200, deadline=None)
@given(tariffs(), starts, durations, durations)
def test_a_longer_call_never_costs_less(tariff: Tariff, start: datetime, a: timedelta, b: timedelta) -> None:
    short, long = sorted([a, b])
    assert rate_call(tariff, "86", "voice", start, short).cost <= rate_call(tariff, "86", "voice", start, long).cost


@settings(max_examples=200, deadline=None)
@given(tariffs(), starts, durations)
def test_billed_time_covers_the_call_by_less_than_one_increment(tariff: Tariff, start: datetime, d: timedelta) -> None:
    call = rate_call(tariff, "86", "voice", start, d)
    largest = max(g.increment_s for r in tariff.destinations[0].rates.values() for g in r.groups)
    assert d.total_seconds() <= call.billed_s < d.total_seconds() + largest or call.billed_s == d.total_seconds() == 0
    assert sum(s.seconds for s in call.spans) == call.billed_s
    assert call.raw == Fraction(call.connect_fee) + sum((s.cost for s in call.spans), Fraction(0))


@settings(max_examples=200, deadline=None)
@given(tariffs(), starts, durations)
def test_the_cost_is_the_precise_cost_rounded_once(tariff: Tariff, start: datetime, d: timedelta) -> None:
    call = rate_call(tariff, "86", "voice", start, d)
    quantum = Fraction(1, 10**tariff.decimals)
    assert abs(Fraction(call.cost) - call.precise) < quantum
    if tariff.rounding == "up":
        assert call.cost >= call.precise
    if tariff.rounding == "down":
        assert call.cost <= call.precise
    if tariff.rounding.startswith("half"):
        assert abs(Fraction(call.cost) - call.precise) <= quantum / 2
    dest = tariff.destinations[0]
    assert call.precise >= dest.min_cost
    assert dest.max_cost is None or call.precise <= dest.max_cost


@settings(max_examples=200, deadline=None)
@given(rates(), starts, starts, durations, st.sampled_from(["Asia/Shanghai", "Europe/Paris"]))
def test_a_price_that_does_not_change_with_the_period_does_not_depend_on_the_hour(
    rate: Rate, a: datetime, b: datetime, d: timedelta, zone: str
) -> None:
    split = Tariff(
        "s",
        (HOLIDAY, PEAK, OFFPEAK),
        (Destination("d", ("",), {"peak": rate, "offpeak": rate, "holiday": rate}),),
        timezone=zone,
    )
    whole = Tariff("w", (ALL_WEEK,), (Destination("d", ("",), {"any": rate}),))
    expected = rate_call(whole, "1", "voice", a, d).precise
    assert rate_call(split, "1", "voice", a, d).precise == expected
    assert rate_call(split, "1", "voice", b, d).precise == expected


@settings(max_examples=200, deadline=None)
@given(tariffs(), starts, st.decimals(min_value=0, max_value=20, places=2), st.integers(1, 4 * 3600))
def test_max_duration_is_the_longest_call_the_budget_pays_for(
    tariff: Tariff, start: datetime, budget: Decimal, cap: int
) -> None:
    limit = max_duration(tariff, "86", "voice", start, budget, cap)
    assert 0 <= limit <= cap
    if limit > 0:
        assert rate_call(tariff, "86", "voice", start, timedelta(seconds=limit)).cost <= budget
    if limit < cap:
        over = rate_call(tariff, "86", "voice", start, timedelta(seconds=limit + 1))
        assert over.cost > budget or over.billed_s > cap


@given(st.sets(st.text("0123456789", max_size=5), min_size=1, max_size=30), st.text("0123456789", max_size=12))
def test_the_longest_matching_prefix_wins(prefixes: set[str], number: str) -> None:
    rate = Rate("r", (RateGroup(0, Decimal(1)),))
    tariff = Tariff("t", (ALL_WEEK,), tuple(Destination(p or "any", (p,), {"any": rate}) for p in prefixes))
    found = tariff.find(number, "voice")
    matching = [p for p in prefixes if number.startswith(p)]
    if not matching:
        assert found is None
    else:
        assert found is not None and found[1] == max(matching, key=len)


@given(st.fractions(min_value=0, max_value=1000), st.integers(0, 6), st.sampled_from(ROUNDING_METHODS))
def test_rounding_lands_on_a_neighbouring_quantum(value: Fraction, decimals: int, method: str) -> None:
    rounded = round_exact(value, decimals, method)  # type: ignore[arg-type]
    assert rounded.as_tuple().exponent == -decimals
    assert abs(Fraction(rounded) - value) < Fraction(1, 10**decimals)
