"""Carrier rate sheets (CSV) into tariffs; the format is documented in docs/billing-rates.md.

Rows are numbered as a spreadsheet shows them: the header is row 1. Every
problem names its row and column, and the whole sheet is refused if one row is
bad, so a half-imported price list never goes live.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from billing.errors import RateSheetError, TariffError
from billing.rating import Destination, Rate, Tariff
from billing.rating.tariff import Category
from billing.tariff_files import categories_from_text, increment_groups, parse_increment

COLUMNS = (
    "prefix",
    "destination",
    "rate",
    "period",
    "increment",
    "connect_fee",
    "min_cost",
    "max_cost",
    "category",
)
REQUIRED = ("prefix", "destination", "rate")
_ALIASES = {
    "connection_fee": "connect_fee",
    "price": "rate",
    "rate_per_minute": "rate",
    "name": "destination",
}
_PREFIX = re.compile(r"^\+?[0-9]{1,20}$")


@dataclass
class _Draft:
    row: int
    categories: tuple[Category, ...]
    connect_fee: Decimal
    min_cost: Decimal
    max_cost: Decimal | None
    prefixes: dict[str, int] = field(default_factory=dict)  # prefix -> row
    rates: dict[str, tuple[int, Rate]] = field(default_factory=dict)  # period -> (row, rate)


def _column_name(raw: str) -> str:
    key = re.sub(r"[\s-]+", "_", raw.strip().lower())
    return _ALIASES.get(key, key)


def _amount(text: str, row: int, column: str, *, optional: bool = False) -> Decimal | None:
    text = text.strip()
    if not text:
        if optional:
            return None
        raise RateSheetError(row, column, "is empty")
    if "," in text:
        raise RateSheetError(row, column, f"{text!r}: use '.' as the decimal point and no thousands separator")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise RateSheetError(row, column, f"{text!r} is not a decimal amount") from None
    if not value.is_finite() or value < 0:
        raise RateSheetError(row, column, f"{text!r} must be a non-negative amount")
    return value


def _rate_name(price: Decimal, increment: str) -> str:
    return f"{price}/min {increment}"


def read_rate_sheet(text: str, base: Tariff, name: str, delimiter: str = ",") -> Tariff:
    """A tariff named ``name`` with ``base``'s periods, zone and rounding, and the sheet's destinations."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise RateSheetError(1, "", "the sheet is empty") from None
    except csv.Error as exc:
        raise RateSheetError(1, "", f"not CSV: {exc}") from None
    columns = [_column_name(h) for h in header]
    for raw, col in zip(header, columns, strict=True):
        if col not in COLUMNS:
            raise RateSheetError(1, raw, f"unknown column; known columns: {', '.join(COLUMNS)}")
        if columns.count(col) > 1:
            raise RateSheetError(1, raw, "column appears twice")
    for col in REQUIRED:
        if col not in columns:
            raise RateSheetError(1, col, "required column is missing")
    periods = list(dict.fromkeys(p.name for p in base.periods))
    drafts: dict[str, _Draft] = {}
    seen_prefixes: dict[tuple[str, Category], tuple[int, str]] = {}
    row_number = 1
    try:
        for row_number, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(columns):
                raise RateSheetError(row_number, "", f"has {len(values)} fields, the header has {len(columns)}")
            _read_row(dict(zip(columns, values, strict=True)), row_number, periods, drafts, seen_prefixes)
    except csv.Error as exc:
        raise RateSheetError(row_number + 1, "", f"not CSV: {exc}") from None
    if not drafts:
        raise RateSheetError(2, "", "the sheet has no rates")
    destinations = []
    for dest_name, draft in drafts.items():
        missing = [p for p in periods if p not in draft.rates]
        if missing:
            raise RateSheetError(
                draft.row, "period", f"destination {dest_name!r} has no rate for period {missing[0]!r}"
            )
        rates = {p: draft.rates[p][1] for p in periods}
        destinations.append(
            Destination(
                dest_name,
                tuple(draft.prefixes),
                rates,
                frozenset(draft.categories),
                draft.connect_fee,
                draft.min_cost,
                draft.max_cost,
            )
        )
    return Tariff(
        name,
        base.periods,
        tuple(destinations),
        timezone=base.timezone,
        currency=base.currency,
        rounding=base.rounding,
        decimals=base.decimals,
        holidays=base.holidays,
    )


def _read_row(
    cells: dict[str, str],
    row: int,
    periods: list[str],
    drafts: dict[str, _Draft],
    seen_prefixes: dict[tuple[str, Category], tuple[int, str]],
) -> None:
    prefix = cells["prefix"].strip().lstrip("+")
    if not _PREFIX.match(cells["prefix"].strip()):
        raise RateSheetError(row, "prefix", f"{cells['prefix']!r} is not a number prefix (digits, optional '+')")
    dest_name = cells["destination"].strip()
    if not dest_name:
        raise RateSheetError(row, "destination", "is empty")
    price = _amount(cells["rate"], row, "rate")
    assert price is not None
    increment = cells.get("increment", "").strip() or "60/60"
    try:
        parse_increment(increment)
    except TariffError as exc:
        raise RateSheetError(row, "increment", str(exc)) from None
    period_cell = cells.get("period", "").strip()
    if period_cell and period_cell not in periods:
        raise RateSheetError(
            row, "period", f"{period_cell!r} is not a period of the base tariff ({', '.join(periods)})"
        )
    try:
        categories = categories_from_text(cells.get("category", "")) or ("voice", "bridged")
    except TariffError as exc:
        raise RateSheetError(row, "category", str(exc)) from None
    connect_fee = _amount(cells.get("connect_fee", ""), row, "connect_fee", optional=True) or Decimal(0)
    min_cost = _amount(cells.get("min_cost", ""), row, "min_cost", optional=True) or Decimal(0)
    max_cost = _amount(cells.get("max_cost", ""), row, "max_cost", optional=True)
    draft = drafts.setdefault(dest_name, _Draft(row, categories, connect_fee, min_cost, max_cost))
    for column, mine, theirs in (
        ("category", categories, draft.categories),
        ("connect_fee", connect_fee, draft.connect_fee),
        ("min_cost", min_cost, draft.min_cost),
        ("max_cost", max_cost, draft.max_cost),
    ):
        if mine != theirs:
            raise RateSheetError(row, column, f"differs from row {draft.row} for the same destination {dest_name!r}")
    for category in categories:
        first = seen_prefixes.setdefault((prefix, category), (row, dest_name))
        if first[1] != dest_name:
            raise RateSheetError(row, "prefix", f"{prefix!r} is already priced for {first[1]!r} on row {first[0]}")
    draft.prefixes.setdefault(prefix, row)
    rate = Rate(_rate_name(price, increment), increment_groups(price, increment))
    for period in [period_cell] if period_cell else periods:
        earlier = draft.rates.setdefault(period, (row, rate))
        if earlier[1] != rate:
            raise RateSheetError(
                row,
                "rate",
                f"destination {dest_name!r} already has another {period} rate on row {earlier[0]}",
            )


def sheet_summary(tariff: Tariff) -> tuple[int, int]:
    """(destinations, prefixes)."""
    return len(tariff.destinations), sum(len(d.prefixes) for d in tariff.destinations)


def iter_rows(tariff: Tariff) -> Iterable[list[str]]:
    """A tariff back as rate-sheet rows (one per prefix and period); for docs and tests."""
    yield [
        "prefix",
        "destination",
        "rate",
        "period",
        "increment",
        "connect_fee",
        "min_cost",
        "max_cost",
        "category",
    ]
    for dest in tariff.destinations:
        for prefix in dest.prefixes:
            for period, rate in dest.rates.items():
                first = rate.groups[0]
                then = rate.groups[1].increment_s if len(rate.groups) > 1 else first.increment_s
                yield [
                    prefix,
                    dest.name,
                    str(first.price),
                    period,
                    f"{first.increment_s}/{then}",
                    str(dest.connect_fee),
                    str(dest.min_cost),
                    "" if dest.max_cost is None else str(dest.max_cost),
                    " ".join(sorted(dest.categories)),
                ]
