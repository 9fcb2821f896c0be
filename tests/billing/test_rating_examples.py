"""Worked rating examples: each test is a call a customer could make, priced by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest

from billing.errors import NoRateError, TariffError
from billing.rating import Destination, PeriodRule, Rate, RateGroup, Tariff, explain, max_duration, rate_call
from tests.billing.tariffs import ALL_WEEK, flat, groups, peak_offpeak

D = Decimal
CST = timedelta(hours=8)
# Monday 5 October 2026, 10:00 in Beijing: peak.
MONDAY_10 = datetime(2026, 10, 5, 2, 0, tzinfo=UTC)


def cost(tariff: Tariff, seconds: float, at: datetime = MONDAY_10, number: str = "8613800000000") -> Decimal:
    return rate_call(tariff, number, "voice", at, timedelta(seconds=seconds)).cost


@pytest.mark.parametrize(
    ("seconds", "expected", "billed"),
    [
        (0, "0.00", 0),
        (1, "0.12", 60),
        (60, "0.12", 60),
        (60.001, "0.24", 120),
        (61, "0.24", 120),
        (125, "0.36", 180),
    ],
)
def test_60_60_charges_whole_minutes(seconds: float, expected: str, billed: int) -> None:
    tariff = flat("0.12", 60)
    call = rate_call(tariff, "86", "voice", MONDAY_10, timedelta(seconds=seconds))
    assert call.cost == D(expected)
    assert call.billed_s == billed


@pytest.mark.parametrize(
    ("seconds", "precise", "billed"),
    [(1, "0.06", 30), (30, "0.06", 30), (31, "0.072", 36), (36, "0.072", 36), (37, "0.084", 42)],
)
def test_30_6_charges_half_a_minute_then_six_seconds(seconds: int, precise: str, billed: int) -> None:
    call = rate_call(flat("0.12", 30, 6, decimals=3), "86", "voice", MONDAY_10, timedelta(seconds=seconds))
    assert call.precise == Fraction(precise)
    assert call.cost == D(precise).quantize(D("0.001"))
    assert call.billed_s == billed


def test_1_1_keeps_the_exact_cost_and_rounds_once() -> None:
    # 125 s at 0.10/min is 0.208333... CNY: a repeating decimal kept exactly, rounded once.
    call = rate_call(flat("0.10", 1), "86", "voice", MONDAY_10, timedelta(seconds=125))
    assert call.precise == Fraction(125, 600)
    assert call.precise_decimal == D("0.208333333333")
    assert call.cost == D("0.21")
    assert call.billed_s == 125


def test_first_minute_whole_then_per_second() -> None:
    tariff = flat("0.15", 60, 1, decimals=4)
    assert cost(tariff, 10) == D("0.1500")
    assert cost(tariff, 60) == D("0.1500")
    assert cost(tariff, 61) == D("0.1525")
    assert cost(tariff, 90.2) == D("0.2275")  # 60 + 31 billed seconds


def test_rounding_once_per_call_not_per_increment() -> None:
    # 100 increments of 1 s at 0.10/min are 0.1666... each 0.001666: per-increment
    # rounding to 2 decimals would give 0.00 each time.
    assert cost(flat("0.10", 1), 100) == D("0.17")


@pytest.mark.parametrize(
    ("method", "at_0125", "at_0135", "exact_021"),
    [
        ("up", "0.13", "0.14", "0.21"),
        ("down", "0.12", "0.13", "0.21"),
        ("half_up", "0.13", "0.14", "0.21"),
        ("half_down", "0.12", "0.13", "0.21"),
        ("half_even", "0.12", "0.14", "0.21"),
    ],
)
def test_each_rounding_method(method: str, at_0125: str, at_0135: str, exact_021: str) -> None:
    tariff = flat("0.15", 1, rounding=method)  # type: ignore[arg-type]
    assert cost(tariff, 50) == D(at_0125)  # exactly 0.125
    assert cost(tariff, 54) == D(at_0135)  # exactly 0.135
    assert cost(tariff, 83.3) == D(exact_021)  # 84 s: 0.21 exactly
    assert cost(flat("0.10", 1, rounding=method), 125) == D({"down": "0.20"}.get(method, "0.21"))  # type: ignore[arg-type]


def test_decimals_per_tariff() -> None:
    assert cost(flat("0.10", 1, decimals=0, rounding="up"), 125) == D("1")
    assert cost(flat("0.10", 1, decimals=4), 125) == D("0.2083")
    assert cost(flat("0.10", 1, decimals=6), 125) == D("0.208333")


def test_connect_fee_is_charged_once_on_answer() -> None:
    tariff = flat("0.12", 60, connect_fee="0.05")
    assert cost(tariff, 0) == D("0.05")
    assert cost(tariff, 30) == D("0.17")
    assert cost(tariff, 90) == D("0.29")


def test_minimum_cost_per_call() -> None:
    tariff = flat("0.06", 1, min_cost="0.10")
    call = rate_call(tariff, "86", "voice", MONDAY_10, timedelta(seconds=20))
    assert call.raw == Fraction(2, 100)
    assert (call.cost, call.adjustment) == (D("0.10"), "minimum")
    assert cost(tariff, 200) == D("0.20")


def test_maximum_cost_per_call() -> None:
    tariff = flat("0.12", 60, max_cost="1.00")
    call = rate_call(tariff, "86", "voice", MONDAY_10, timedelta(hours=1))
    assert call.raw == Fraction("7.2")
    assert (call.cost, call.adjustment) == (D("1.00"), "maximum")


def test_a_call_crossing_from_peak_to_offpeak_is_split_at_the_boundary() -> None:
    tariff = peak_offpeak("0.20", "0.10", first=1)
    start = datetime(2026, 10, 5, 18, 58, tzinfo=UTC) - CST  # Monday 18:58 in Beijing
    call = rate_call(tariff, "8613800000000", "voice", start, timedelta(seconds=300))
    assert [(s.period, s.offset_s, s.seconds) for s in call.spans] == [
        ("peak", 0, 120),
        ("offpeak", 120, 180),
    ]
    assert call.cost == D("0.70")  # 2 min at 0.20 + 3 min at 0.10


def test_an_increment_straddling_the_boundary_keeps_the_rate_where_it_started() -> None:
    tariff = peak_offpeak("0.20", "0.10", first=60)
    start = datetime(2026, 10, 5, 18, 59, 30, tzinfo=UTC) - CST  # 30 s before off-peak
    call = rate_call(tariff, "86", "voice", start, timedelta(seconds=90))
    assert [(s.period, s.offset_s, s.increments) for s in call.spans] == [("peak", 0, 1), ("offpeak", 60, 1)]
    assert call.cost == D("0.30")


def test_a_call_crossing_midnight_into_the_weekend_and_back() -> None:
    tariff = peak_offpeak("0.20", "0.10", first=1)
    friday_1850 = datetime(2026, 10, 9, 18, 50, tzinfo=UTC) - CST
    call = rate_call(tariff, "86", "voice", friday_1850, timedelta(minutes=20))
    assert [(s.period, s.seconds) for s in call.spans] == [("peak", 600), ("offpeak", 600)]
    sunday_2350 = datetime(2026, 10, 11, 23, 50, tzinfo=UTC) - CST
    call = rate_call(tariff, "86", "voice", sunday_2350, timedelta(hours=9))  # to Monday 08:50
    assert [(s.period, s.seconds) for s in call.spans] == [("offpeak", 8 * 3600 + 600), ("peak", 3000)]


def test_holidays_take_precedence_in_the_tariffs_zone() -> None:
    tariff = peak_offpeak("0.20", "0.10", first=1)
    # Thursday 1 October 2026, 10:00 in Beijing (02:00 UTC): a holiday, not peak.
    call = rate_call(tariff, "86", "voice", datetime(2026, 10, 1, 2, 0, tzinfo=UTC), timedelta(minutes=10))
    assert [s.period for s in call.spans] == ["holiday"]
    assert call.cost == D("0.50")
    # 30 September 23:55 Beijing is 15:55 UTC: the holiday starts at local midnight.
    call = rate_call(tariff, "86", "voice", datetime(2026, 9, 30, 15, 55, tzinfo=UTC), timedelta(minutes=10))
    assert [(s.period, s.seconds) for s in call.spans] == [("offpeak", 300), ("holiday", 300)]


def test_periods_follow_daylight_saving_in_the_tariffs_zone() -> None:
    dest = Destination("fr", ("33",), {"peak": Rate("p", groups("0.60", 1)), "off": Rate("o", groups("0.06", 1))})
    tariff = Tariff(
        "paris",
        (PeriodRule("peak", ranges=((8 * 60, 20 * 60),)), PeriodRule("off")),
        (dest,),
        timezone="Europe/Paris",
    )
    # Sunday 25 October 2026 clocks go back at 03:00 CEST; 08:00 CET is 07:00 UTC.
    call = rate_call(tariff, "33", "voice", datetime(2026, 10, 25, 6, 50, tzinfo=UTC), timedelta(minutes=20))
    assert [(s.period, s.seconds) for s in call.spans] == [("off", 600), ("peak", 600)]
    # Saturday 08:00 CEST is 06:00 UTC.
    call = rate_call(tariff, "33", "voice", datetime(2026, 10, 24, 5, 50, tzinfo=UTC), timedelta(minutes=20))
    assert [(s.period, s.seconds) for s in call.spans] == [("off", 600), ("peak", 600)]


def test_longest_prefix_wins() -> None:
    cd = Destination("DR Congo", ("243",), {"any": Rate("cd", groups("0.30", 60))})
    cd_mobile = Destination("DR Congo Vodacom", ("24381", "24382"), {"any": Rate("cdm", groups("0.40", 60))})
    rest = Destination("world", ("",), {"any": Rate("w", groups("1.00", 60))})
    tariff = Tariff("t", (ALL_WEEK,), (cd, cd_mobile, rest))
    assert tariff.find("243812345678", "voice") == (cd_mobile, "24381")
    assert tariff.find("243991234567", "voice") == (cd, "243")
    assert tariff.find("441234", "voice") == (rest, "")
    assert tariff.find("243812345678", "video") is None


def test_categories_choose_the_destination() -> None:
    voice = Destination("cn voice", ("86",), {"any": Rate("v", groups("0.10", 60))}, categories=frozenset({"voice"}))
    video = Destination("cn video", ("86",), {"any": Rate("vid", groups("0.50", 60))}, categories=frozenset({"video"}))
    tariff = Tariff("t", (ALL_WEEK,), (voice, video))
    assert rate_call(tariff, "86", "video", MONDAY_10, timedelta(seconds=60)).cost == D("0.50")
    assert rate_call(tariff, "86", "voice", MONDAY_10, timedelta(seconds=60)).cost == D("0.10")
    with pytest.raises(NoRateError, match="no bridged destination"):
        rate_call(tariff, "86", "bridged", MONDAY_10, timedelta(seconds=60))


def test_a_destination_without_a_rate_for_the_period_cannot_be_rated() -> None:
    dest = Destination("cn", ("86",), {"peak": Rate("p", groups("0.20", 60))})
    tariff = Tariff("t", (PEAK_RULE := PeriodRule("peak", days=frozenset(range(5))), PeriodRule("off")), (dest,))
    assert PEAK_RULE.name == "peak"
    with pytest.raises(NoRateError, match="no rate for period 'off'"):
        rate_call(tariff, "86", "voice", datetime(2026, 10, 10, 2, 0, tzinfo=UTC), timedelta(seconds=60))


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"periods": (PeriodRule("peak", ranges=((0, 600),)),)}, "leave mon 10:00 without a period"),
        ({"decimals": 7}, "decimals must be between 0 and 6"),
        ({"timezone": "Mars/Olympus"}, "unknown IANA time zone"),
        ({"rounding": "sideways"}, "rounding must be one of"),
    ],
)
def test_bad_tariffs_are_refused(kwargs: dict[str, object], problem: str) -> None:
    args: dict[str, object] = {"name": "t", "periods": (ALL_WEEK,), "destinations": ()}
    args.update(kwargs)
    with pytest.raises(TariffError, match=problem):
        Tariff(**args)  # type: ignore[arg-type]


def test_bad_rates_are_refused() -> None:
    with pytest.raises(TariffError, match="first group must start at second 0"):
        Rate("r", (RateGroup(10, D("0.1")),))
    with pytest.raises(TariffError, match="must increase"):
        Rate("r", (RateGroup(0, D("0.1")), RateGroup(0, D("0.1"))))
    with pytest.raises(TariffError, match="positive"):
        RateGroup(0, D("0.1"), 60, 0)


def test_max_duration_spends_the_budget_to_the_last_whole_increment() -> None:
    # 1 CNY at 0.60/min per second buys 100 s; a 0.05 connect fee leaves 95 s.
    assert max_duration(flat("0.60", 1), "86", "voice", MONDAY_10, D("1.00"), 3600) == 100
    assert max_duration(flat("0.60", 1, connect_fee="0.05"), "86", "voice", MONDAY_10, D("1.00"), 3600) == 95
    # 60/60 at 0.12: 0.30 buys two whole minutes.
    assert max_duration(flat("0.12", 60), "86", "voice", MONDAY_10, D("0.30"), 3600) == 120
    # Not even the connect fee: no call at all.
    assert max_duration(flat("0.12", 60, connect_fee="0.50"), "86", "voice", MONDAY_10, D("0.30"), 3600) == 0
    # A maximum cost within budget lets the call run to the cap.
    assert max_duration(flat("0.12", 60, max_cost="0.20"), "86", "voice", MONDAY_10, D("0.30"), 3600) == 3600


def test_max_duration_across_a_period_boundary() -> None:
    tariff = peak_offpeak("0.60", "0.30", first=1)
    start = datetime(2026, 10, 5, 18, 59, tzinfo=UTC) - CST  # 60 s of peak left
    # 0.60 for the peak minute, then 0.40 buys 80 s of off-peak.
    assert max_duration(tariff, "86", "voice", start, D("1.00"), 7200) == 140


def test_max_duration_respects_rounding_up() -> None:
    # 0.10/min per second rounded up to 0.01: 0.05 buys 30 s exactly, 31 s would round to 0.06.
    tariff = flat("0.10", 1, rounding="up")
    assert max_duration(tariff, "86", "voice", MONDAY_10, D("0.05"), 3600) == 30
    assert cost(tariff, 30) == D("0.05")
    assert cost(tariff, 31) == D("0.06")


def test_explain_names_every_step() -> None:
    tariff = peak_offpeak("0.20", "0.10", first=60, then=1)
    start = datetime(2026, 10, 5, 18, 59, tzinfo=UTC) - CST
    call = rate_call(tariff, "8613800000000", "voice", start, timedelta(seconds=125))
    text = "\n".join(explain(call, tariff))
    assert "destination China (prefix 86)" in text
    assert "peak" in text and "offpeak" in text
    assert "rounded half up to 2 decimals: 0.31 CNY" in text  # 0.20 + 65 s at 0.10/min = 0.3083
