"""Tariff files: TOML in, a validated ``Tariff`` out (and back, for imported rate sheets).

A file looks like ``config/tariffs/acme-standard.toml``::

    name = "acme-standard"
    timezone = "Asia/Shanghai"
    rounding = "half_up"        # up, down, half_up, half_down, half_even
    decimals = 2
    holidays = ["2026-10-01"]

    [[periods]]                 # first match wins; holiday rules first on holidays
    name = "peak"
    days = ["weekdays"]         # mon..sun, weekdays, weekend, all
    hours = ["08:00-19:00"]

    [rates.cn-peak]
    price = "0.15"              # per unit (60 s unless unit says otherwise)
    increment = "60/1"          # first 60 s whole, then per second; or groups = [...]

    [[destinations]]
    name = "China"
    prefixes = ["86"]
    rates = { peak = "cn-peak", offpeak = "cn-off" }

Errors name the file and the key ("acme.toml: destinations[3].rates: ...").
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

from billing.errors import TariffError
from billing.rating import Destination, PeriodRule, Rate, RateGroup, Tariff
from billing.rating.money import RoundingMethod
from billing.rating.tariff import CATEGORIES, MINUTES_PER_DAY, WEEKDAYS, Category
from gateway.configschema import ConfigError, bounds, load_section

_DAY_SETS = {"all": range(7), "weekdays": range(5), "weekend": range(5, 7)}
_HOURS = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")
_INCREMENT = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True)
class GroupSpec:
    price: Decimal
    start: int = field(default=0, metadata=bounds(0, 86400))
    unit: int = field(default=60, metadata=bounds(1, 86400))
    increment: int = field(default=60, metadata=bounds(1, 86400))


@dataclass(frozen=True)
class RateSpec:
    price: Decimal | None = None
    unit: int = field(default=60, metadata=bounds(1, 86400))
    increment: str = "60/60"
    groups: tuple[GroupSpec, ...] = ()


@dataclass(frozen=True)
class PeriodSpec:
    name: str
    days: tuple[str, ...] = ("all",)
    hours: tuple[str, ...] = ("00:00-24:00",)
    holiday: bool = False


@dataclass(frozen=True)
class DestinationSpec:
    name: str
    prefixes: tuple[str, ...]
    rates: Mapping[str, str]
    categories: tuple[Category, ...] = ("voice", "bridged")
    connect_fee: Decimal = Decimal(0)
    min_cost: Decimal = Decimal(0)
    max_cost: Decimal | None = None


@dataclass(frozen=True)
class TariffSpec:
    name: str
    destinations: tuple[DestinationSpec, ...]
    rates: Mapping[str, RateSpec]
    periods: tuple[PeriodSpec, ...] = (PeriodSpec("any"),)
    timezone: str = "Asia/Shanghai"
    currency: str = "CNY"
    rounding: RoundingMethod = "half_up"
    decimals: int = field(default=2, metadata=bounds(0, 6))
    holidays: tuple[str, ...] = ()


def parse_increment(text: str) -> tuple[int, int]:
    """'60/1' -> (60, 1): the first increment, then the following ones."""
    m = _INCREMENT.match(text.strip())
    if not m or int(m[1]) == 0 or int(m[2]) == 0:
        raise TariffError(f"increment {text!r} is not like 60/60, 30/6 or 60/1")
    return int(m[1]), int(m[2])


def increment_groups(price: Decimal, increment: str, unit: int = 60) -> tuple[RateGroup, ...]:
    first, then = parse_increment(increment)
    head = RateGroup(0, price, unit, first)
    return (head,) if first == then else (head, RateGroup(first, price, unit, then))


def _rate(name: str, spec: RateSpec) -> Rate:
    if spec.groups:
        if spec.price is not None:
            raise TariffError("give either price (with increment) or groups, not both")
        groups = tuple(RateGroup(g.start, g.price, g.unit, g.increment) for g in spec.groups)
        return Rate(name, groups)
    if spec.price is None:
        raise TariffError("needs a price (with increment) or groups")
    return Rate(name, increment_groups(spec.price, spec.increment, spec.unit))


def _minutes(text: str) -> int:
    hours, minutes = int(text[:2]), int(text[3:])
    if minutes >= 60 or hours * 60 + minutes > MINUTES_PER_DAY:
        raise TariffError(f"{text!r} is not a time of day")
    return hours * 60 + minutes


def _period(spec: PeriodSpec) -> PeriodRule:
    days: set[int] = set()
    for day in spec.days:
        key = day.lower()
        if key in _DAY_SETS:
            days.update(_DAY_SETS[key])
        elif key in WEEKDAYS:
            days.add(WEEKDAYS.index(key))
        else:
            raise TariffError(f"days: {day!r} is not mon..sun, weekdays, weekend or all")
    ranges = []
    for hours in spec.hours:
        m = _HOURS.match(hours)
        if not m:
            raise TariffError(f"hours: {hours!r} is not like 08:00-19:00")
        ranges.append((_minutes(hours[:5]), _minutes(hours[6:])))
    return PeriodRule(spec.name, frozenset(days), tuple(ranges), spec.holiday)


def _blame(key: str, fn, *args):  # type: ignore[no-untyped-def]
    try:
        return fn(*args)
    except TariffError as exc:
        raise TariffError(f"{key}: {exc}") from None


def tariff_from_data(data: Mapping[str, object], version: str = "", source: str = "") -> Tariff:
    """Build a tariff from parsed TOML; errors name the key."""
    try:
        spec = load_section(TariffSpec, data)
    except ConfigError as exc:
        raise TariffError(str(exc)) from None
    rates = {name: _blame(f"rates.{name}", _rate, name, r) for name, r in spec.rates.items()}
    periods = tuple(_blame(f"periods[{i}]", _period, p) for i, p in enumerate(spec.periods))
    destinations = []
    for i, d in enumerate(spec.destinations):
        key = f"destinations[{i}]"
        missing = sorted(set(d.rates.values()) - set(rates))
        if missing:
            raise TariffError(f"{key}.rates: no rate named {missing[0]!r} under [rates]")
        destinations.append(
            _blame(
                key,
                Destination,
                d.name,
                tuple(p.lstrip("+") for p in d.prefixes),
                {period: rates[r] for period, r in d.rates.items()},
                frozenset(d.categories),
                d.connect_fee,
                d.min_cost,
                d.max_cost,
            )
        )
    holidays = set()
    for i, text in enumerate(spec.holidays):
        try:
            holidays.add(date.fromisoformat(text))
        except ValueError:
            raise TariffError(f"holidays[{i}]: {text!r} is not a date like 2026-10-01") from None
    return Tariff(
        spec.name,
        periods,
        tuple(destinations),
        timezone=spec.timezone,
        currency=spec.currency,
        rounding=spec.rounding,
        decimals=spec.decimals,
        holidays=frozenset(holidays),
        version=version,
        source=source,
    )


def load_tariff_file(path: Path) -> Tariff:
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
        return tariff_from_data(data, version=hashlib.sha256(raw).hexdigest()[:12], source=str(path))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TariffError(f"{path}: not valid TOML: {exc}") from None
    except TariffError as exc:
        raise TariffError(f"{path}: {exc}") from None


class TariffBook:
    """The tariffs in a directory, by name. Loading is all-or-nothing: one bad file refuses the lot."""

    def __init__(self, tariffs: Mapping[str, Tariff]) -> None:
        self._tariffs = dict(tariffs)

    @classmethod
    def load(cls, directory: Path) -> TariffBook:
        tariffs: dict[str, Tariff] = {}
        for path in sorted(directory.glob("*.toml")) if directory.is_dir() else []:
            tariff = load_tariff_file(path)
            if tariff.name in tariffs:
                raise TariffError(f"{path}: tariff name {tariff.name!r} is also used by {tariffs[tariff.name].source}")
            tariffs[tariff.name] = tariff
        return cls(tariffs)

    def get(self, name: str) -> Tariff | None:
        return self._tariffs.get(name)

    def names(self) -> list[str]:
        return sorted(self._tariffs)


# Writing: imported rate sheets become ordinary tariff files, readable and diffable.


def _toml_str(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped) + '"'


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]"


def _hours(start: int, end: int) -> str:
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


def tariff_to_toml(tariff: Tariff) -> str:
    """A tariff file that loads back to an equal tariff."""
    lines = [
        f"name = {_toml_str(tariff.name)}",
        f"timezone = {_toml_str(tariff.timezone)}",
        f"currency = {_toml_str(tariff.currency)}",
        f"rounding = {_toml_str(tariff.rounding)}",
        f"decimals = {tariff.decimals}",
        f"holidays = {_toml_list([_toml_str(d.isoformat()) for d in sorted(tariff.holidays)])}",
    ]
    for rule in tariff.periods:
        lines += [
            "",
            "[[periods]]",
            f"name = {_toml_str(rule.name)}",
            f"days = {_toml_list([_toml_str(WEEKDAYS[d]) for d in sorted(rule.days)])}",
            f"hours = {_toml_list([_toml_str(_hours(*r)) for r in rule.ranges])}",
            f"holiday = {'true' if rule.holiday else 'false'}",
        ]
    rates: dict[str, Rate] = {}
    for dest in tariff.destinations:
        for rate in dest.rates.values():
            if rates.setdefault(rate.name, rate) != rate:
                raise TariffError(f"two different rates are named {rate.name!r}")
    for name in sorted(rates):
        groups = [
            f"{{ start = {g.start_s}, price = {_toml_str(str(g.price))}, "
            f"unit = {g.unit_s}, increment = {g.increment_s} }}"
            for g in rates[name].groups
        ]
        lines += ["", f"[rates.{_toml_str(name)}]", f"groups = {_toml_list(groups)}"]
    for dest in tariff.destinations:
        lines += [
            "",
            "[[destinations]]",
            f"name = {_toml_str(dest.name)}",
            f"prefixes = {_toml_list([_toml_str(p) for p in dest.prefixes])}",
            f"categories = {_toml_list([_toml_str(c) for c in CATEGORIES if c in dest.categories])}",
            f"connect_fee = {_toml_str(str(dest.connect_fee))}",
            f"min_cost = {_toml_str(str(dest.min_cost))}",
        ]
        if dest.max_cost is not None:
            lines.append(f"max_cost = {_toml_str(str(dest.max_cost))}")
        pairs = ", ".join(f"{_toml_str(p)} = {_toml_str(r.name)}" for p, r in dest.rates.items())
        lines.append(f"rates = {{ {pairs} }}")
    return "\n".join(lines) + "\n"


def categories_from_text(text: str) -> tuple[Category, ...]:
    names = [c for c in re.split(r"[\s;|]+", text.strip().lower()) if c]
    for c in names:
        if c not in CATEGORIES:
            raise TariffError(f"{c!r} is not a category ({', '.join(CATEGORIES)})")
    return tuple(c for c in CATEGORIES if c in names)
