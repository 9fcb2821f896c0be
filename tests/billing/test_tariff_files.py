"""Tariff files and carrier rate sheets: what loads, what is refused, and how the refusal reads."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from billing.errors import RateSheetError, TariffError
from billing.rate_sheet import read_rate_sheet
from billing.rating import rate_call
from billing.rating.numbers import normalize_number
from billing.tariff_files import TariffBook, load_tariff_file, tariff_from_data, tariff_to_toml
from tests.billing.tariffs import flat, peak_offpeak

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "tariffs" / "acme-standard.toml"
SHEET = REPO / "config" / "tariffs" / "carrier-example.csv"


def test_the_example_tariff_loads_and_prices_calls_home_under_the_target() -> None:
    tariff = load_tariff_file(EXAMPLE)
    assert tariff.name == "acme-standard" and len(tariff.version) == 12
    # Monday 5 October 2026 18:30 in Beijing, 125 s to a landline in China: peak, 60/1.
    call = rate_call(
        tariff,
        "861012345678",
        "voice",
        datetime(2026, 10, 5, 10, 30, tzinfo=UTC),
        timedelta(seconds=125),
    )
    assert call.destination == "China" and call.cost == Decimal("0.38")  # 0.18 + 65 s at 0.18/min
    assert rate_call(tariff, "@bob", "video", datetime(2026, 10, 5, tzinfo=UTC), timedelta(hours=1)).cost == 0


def test_a_tariff_file_round_trips_through_toml() -> None:
    for tariff in (
        load_tariff_file(EXAMPLE),
        peak_offpeak(first=60, then=1),
        flat("0.12", 30, 6, max_cost="9"),
    ):
        again = tariff_from_data(tomllib.loads(tariff_to_toml(tariff)))
        assert again.periods == tariff.periods
        assert again.destinations == tariff.destinations
        assert (again.timezone, again.rounding, again.decimals, again.holidays) == (
            tariff.timezone,
            tariff.rounding,
            tariff.decimals,
            tariff.holidays,
        )


BASE = {
    "name": "t",
    "rates": {"r": {"price": "0.1"}},
    "destinations": [{"name": "cn", "prefixes": ["86"], "rates": {"any": "r"}}],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"decimals": 9}, "decimals: must be at most 6"),
        ({"rounding": "nearest"}, "rounding: must be one of"),
        ({"rates": {"r": {"price": "abc"}}}, "rates.r.price: expected a decimal amount"),
        ({"rates": {"r": {"price": "0.1", "increment": "60"}}}, "rates.r: increment '60' is not like 60/60"),
        ({"rates": {"r": {}}}, "rates.r: needs a price"),
        (
            {"destinations": [{"name": "cn", "prefixes": ["86"], "rates": {"any": "nope"}}]},
            "destinations[0].rates: no rate named 'nope'",
        ),
        (
            {"destinations": [{"name": "cn", "prefixes": ["86"], "rates": {"peak": "r"}}]},
            "no period named 'peak'",
        ),
        (
            {"destinations": [{"name": "cn", "prefixes": ["86"], "rates": {"any": "r"}, "colour": 1}]},
            "destinations[0].colour: unknown key",
        ),
        ({"periods": [{"name": "p", "days": ["weekdays"]}]}, "leave sat 00:00 without a period"),
        (
            {"periods": [{"name": "p", "hours": ["8-19"]}]},
            "periods[0]: hours: '8-19' is not like 08:00-19:00",
        ),
        ({"periods": [{"name": "p", "days": ["someday"]}]}, "periods[0]: days: 'someday'"),
        ({"holidays": ["1 Oct"]}, "holidays[0]: '1 Oct' is not a date"),
    ],
)
def test_bad_tariff_files_name_the_key(change: dict[str, object], message: str) -> None:
    with pytest.raises(TariffError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        tariff_from_data({**BASE, **change})


def test_a_tariff_book_refuses_two_files_with_one_name(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_bytes(EXAMPLE.read_bytes())
    assert TariffBook.load(tmp_path).names() == ["acme-standard"]
    (tmp_path / "b.toml").write_bytes(EXAMPLE.read_bytes())
    with pytest.raises(TariffError, match="also used by"):
        TariffBook.load(tmp_path)
    (tmp_path / "b.toml").write_text("name = ")
    with pytest.raises(TariffError, match=r"b\.toml: not valid TOML"):
        TariffBook.load(tmp_path)


def test_the_example_rate_sheet_imports() -> None:
    tariff = read_rate_sheet(SHEET.read_text(), load_tariff_file(EXAMPLE), "carrier")
    assert [d.name for d in tariff.destinations] == [
        "China",
        "China mobile",
        "DR Congo",
        "DR Congo Vodacom",
        "Uganda",
    ]
    assert tariff.periods == load_tariff_file(EXAMPLE).periods
    monday = datetime(2026, 10, 5, 2, tzinfo=UTC)
    call = rate_call(tariff, "243812345678", "voice", monday, timedelta(seconds=31))
    assert (call.destination, call.cost) == ("DR Congo Vodacom", Decimal("0.57"))  # 30 s + 6 s at 0.95/min
    assert rate_call(tariff, "8613800000000", "voice", monday, timedelta(seconds=60)).cost == Decimal("0.18")
    again = tariff_from_data(tomllib.loads(tariff_to_toml(tariff)))
    assert again.destinations == tariff.destinations


HEADER = "prefix,destination,rate,period,increment,connect_fee,category\n"


@pytest.mark.parametrize(
    ("rows", "row", "column", "problem"),
    [
        ("86,China,0,12\n", 2, "", "has 4 fields, the header has 7"),
        ('86,China,"0,12",,,,\n', 2, "rate", "use '.' as the decimal point"),
        ("86,China,abc,,,,\n", 2, "rate", "'abc' is not a decimal amount"),
        ("86,China,-1,,,,\n", 2, "rate", "must be a non-negative amount"),
        ("86,China,0.1,,,,\n8x6,China,0.1,,,,\n", 3, "prefix", "'8x6' is not a number prefix"),
        ("86,China,0.1,,,,\n,China,0.1,,,,\n", 3, "prefix", "is not a number prefix"),
        ("86,,0.1,,,,\n", 2, "destination", "is empty"),
        ("86,China,0.1,,60,,\n", 2, "increment", "'60' is not like 60/60"),
        ("86,China,0.1,,0/6,,\n", 2, "increment", "is not like"),
        ("86,China,0.1,night,,,\n", 2, "period", "'night' is not a period of the base tariff (any)"),
        ("86,China,0.1,,,,fax\n", 2, "category", "'fax' is not a category"),
        ("86,China,0.1,,,,\n86,Sino,0.2,,,,\n", 3, "prefix", "'86' is already priced for 'China' on row 2"),
        ("86,China,0.1,,,,\n861,China,0.1,,,0.05,\n", 3, "connect_fee", "differs from row 2"),
        ("86,China,0.1,,,,\n861,China,0.2,,,,\n", 3, "rate", "already has another any rate on row 2"),
        ("", 2, "", "the sheet has no rates"),
    ],
)
def test_bad_rate_sheet_rows_name_row_and_column(rows: str, row: int, column: str, problem: str) -> None:
    with pytest.raises(RateSheetError) as err:
        read_rate_sheet(HEADER + rows, flat("0.1"), "x")
    assert (err.value.row, err.value.column) == (row, column)
    assert problem in err.value.problem
    assert str(err.value).startswith(f"row {row}, column {column!r}: ")


def test_rate_sheet_header_problems() -> None:
    with pytest.raises(RateSheetError, match="row 1, column 'Country': unknown column"):
        read_rate_sheet("Prefix,Destination,Rate,Country\n", flat("0.1"), "x")
    with pytest.raises(RateSheetError, match="row 1, column 'rate': required column is missing"):
        read_rate_sheet("prefix,destination\n", flat("0.1"), "x")
    with pytest.raises(RateSheetError, match="column appears twice"):
        read_rate_sheet("prefix,destination,rate,price\n", flat("0.1"), "x")


def test_a_sheet_must_price_every_period_of_its_base() -> None:
    base = peak_offpeak()
    sheet = "\ufeffPrefix;Destination;Rate per minute;Period\n86;China;0.20;peak\n86;China;0.10;offpeak\n"
    with pytest.raises(
        RateSheetError, match="row 2, column 'period': destination 'China' has no rate for period 'holiday'"
    ):
        read_rate_sheet(sheet, base, "x", delimiter=";")
    tariff = read_rate_sheet(sheet + "86;China;0.05;holiday\n", base, "x", delimiter=";")
    assert {p: r.groups[0].price for p, r in tariff.destinations[0].rates.items()} == {
        "peak": Decimal("0.20"),
        "offpeak": Decimal("0.10"),
        "holiday": Decimal("0.05"),
    }


@pytest.mark.parametrize(
    ("callee", "number"),
    [
        ("sip:+8613800000000@gw.acme", "8613800000000"),
        ("sip:008613800000000@gw.acme;user=phone", "8613800000000"),
        ("tel:+243-81-234-5678", "243812345678"),
        ("13800000000", "13800000000"),
        ("sip:bob@acme", "@bob"),
        ("alice", "@alice"),
    ],
)
def test_numbers_are_normalised_for_prefix_matching(callee: str, number: str) -> None:
    assert normalize_number(callee) == number
