"""What a tariff is: periods of the week, destinations by prefix, rates as groups of increments.

The model follows the carrier rating engines' vocabulary. A *rate* is a list of
*groups*; a group says "from second ``start_s`` of the call, charge ``price``
per ``unit_s`` seconds, in steps of ``increment_s`` seconds". So

- 60/60 is one group (0, p, 60, 60);
- 30/6 is (0, p, 60, 30) then (30, p, 60, 6);
- 1/1 is (0, p, 60, 1);
- "first minute whole, then per second" is (0, p, 60, 60) then (60, p, 60, 1).

A *destination* names prefixes, the categories it prices, a connect fee, a
minimum and maximum cost per call, and one rate per *period* (peak, off-peak,
holiday...). Periods are rules over the tariff's local week; the first rule that
matches a local instant names its period, and holiday rules come first on the
tariff's holiday dates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from functools import cached_property
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from billing.errors import TariffError
from billing.rating.money import MAX_DECIMALS, ROUNDING_METHODS, RoundingMethod

Category = Literal["voice", "video", "bridged", "iptv"]
CATEGORIES: tuple[Category, ...] = ("voice", "video", "bridged", "iptv")
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class RateGroup:
    start_s: int
    price: Decimal
    unit_s: int = 60
    increment_s: int = 60

    def __post_init__(self) -> None:
        if self.start_s < 0:
            raise TariffError(f"group start {self.start_s} must not be negative")
        if self.unit_s <= 0 or self.increment_s <= 0:
            raise TariffError("group unit and increment must be positive whole seconds")
        if not self.price.is_finite() or self.price < 0:
            raise TariffError(f"price {self.price} must be a non-negative amount")

    @property
    def increment_cost(self) -> Fraction:
        return Fraction(self.price) * self.increment_s / self.unit_s


@dataclass(frozen=True)
class Rate:
    name: str
    groups: tuple[RateGroup, ...]

    def __post_init__(self) -> None:
        if not self.groups or self.groups[0].start_s != 0:
            raise TariffError(f"rate {self.name!r}: the first group must start at second 0")
        starts = [g.start_s for g in self.groups]
        if starts != sorted(set(starts)):
            raise TariffError(f"rate {self.name!r}: group starts must increase")

    def group_at(self, offset_s: float) -> int:
        """Index of the group that prices the increment starting ``offset_s`` into the call."""
        index = 0
        for i, group in enumerate(self.groups):
            if group.start_s <= offset_s:
                index = i
        return index

    @property
    def max_increment_s(self) -> int:
        return max(g.increment_s for g in self.groups)


@dataclass(frozen=True)
class PeriodRule:
    name: str
    days: frozenset[int] = frozenset(range(7))  # 0 is Monday
    ranges: tuple[tuple[int, int], ...] = ((0, MINUTES_PER_DAY),)  # [start, end) in minutes
    holiday: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise TariffError("a period needs a name")
        if not self.days or not self.days <= frozenset(range(7)):
            raise TariffError(f"period {self.name!r}: days must be weekdays 0 (Monday) to 6")
        for start, end in self.ranges:
            if not 0 <= start < end <= MINUTES_PER_DAY:
                raise TariffError(f"period {self.name!r}: hours must run forwards within a day")

    def matches(self, weekday: int, second_of_day: float) -> bool:
        if weekday not in self.days:
            return False
        return any(start * 60 <= second_of_day < end * 60 for start, end in self.ranges)


@dataclass(frozen=True)
class Destination:
    name: str
    prefixes: tuple[str, ...]
    rates: Mapping[str, Rate]  # period name -> rate
    categories: frozenset[Category] = frozenset({"voice", "bridged"})
    connect_fee: Decimal = Decimal(0)
    min_cost: Decimal = Decimal(0)
    max_cost: Decimal | None = None

    def __post_init__(self) -> None:
        if not self.prefixes:
            raise TariffError(f"destination {self.name!r}: needs at least one prefix")
        for prefix in self.prefixes:
            if prefix != prefix.strip() or " " in prefix:
                raise TariffError(f"destination {self.name!r}: prefix {prefix!r} has spaces")
        amounts = [self.connect_fee, self.min_cost] + ([self.max_cost] if self.max_cost is not None else [])
        if any(not a.is_finite() or a < 0 for a in amounts):
            raise TariffError(f"destination {self.name!r}: fees and limits must be non-negative amounts")
        if self.max_cost is not None and self.max_cost < self.min_cost:
            raise TariffError(f"destination {self.name!r}: max_cost is below min_cost")
        if not self.categories <= frozenset(CATEGORIES):
            raise TariffError(f"destination {self.name!r}: categories must be among {', '.join(CATEGORIES)}")


@dataclass(frozen=True)
class Tariff:
    name: str
    periods: tuple[PeriodRule, ...]
    destinations: tuple[Destination, ...]
    timezone: str = "Asia/Shanghai"
    currency: str = "CNY"
    rounding: RoundingMethod = "half_up"
    decimals: int = 2
    holidays: frozenset[date] = frozenset()
    version: str = ""  # content hash of the source, set by the loader
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.rounding not in ROUNDING_METHODS:
            raise TariffError(f"rounding must be one of {', '.join(ROUNDING_METHODS)}")
        if not 0 <= self.decimals <= MAX_DECIMALS:
            raise TariffError(f"decimals must be between 0 and {MAX_DECIMALS}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise TariffError(f"unknown IANA time zone {self.timezone!r}") from None
        self._check_coverage()
        names = {p.name for p in self.periods}
        for dest in self.destinations:
            unknown = sorted(set(dest.rates) - names)
            if unknown:
                raise TariffError(f"destination {dest.name!r}: no period named {unknown[0]!r}")
        seen: dict[tuple[str, str], str] = {}
        for dest in self.destinations:
            for category in dest.categories:
                for prefix in dest.prefixes:
                    other = seen.setdefault((category, prefix), dest.name)
                    if other != dest.name:
                        raise TariffError(
                            f"prefix {prefix!r} ({category}) is claimed by destinations {other!r} and {dest.name!r}"
                        )

    def _check_coverage(self) -> None:
        for day in range(7):
            covered = [False] * MINUTES_PER_DAY
            for rule in self.periods:
                if rule.holiday or day not in rule.days:
                    continue
                for start, end in rule.ranges:
                    covered[start:end] = [True] * (end - start)
            if not all(covered):
                minute = covered.index(False)
                raise TariffError(
                    f"periods leave {WEEKDAYS[day]} {minute // 60:02d}:{minute % 60:02d} without a period"
                )

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def _index(self) -> dict[str, dict[str, Destination]]:
        index: dict[str, dict[str, Destination]] = {c: {} for c in CATEGORIES}
        for dest in self.destinations:
            for category in dest.categories:
                for prefix in dest.prefixes:
                    index[category][prefix] = dest
        return index

    @cached_property
    def _edges(self) -> tuple[int, ...]:
        """Minutes of the day at which some rule starts or stops (where the period may change)."""
        edges = {m for rule in self.periods for r in rule.ranges for m in r}
        return tuple(sorted(edges - {0, MINUTES_PER_DAY}))

    def find(self, number: str, category: Category) -> tuple[Destination, str] | None:
        """The destination with the longest prefix of ``number``, and that prefix."""
        table = self._index.get(category, {})
        for length in range(len(number), -1, -1):
            dest = table.get(number[:length])
            if dest is not None:
                return dest, number[:length]
        return None

    def period_at(self, instant: datetime) -> str:
        local = instant.astimezone(self.zone)
        weekday = local.weekday()
        second = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        if local.date() in self.holidays:
            for rule in self.periods:
                if rule.holiday and rule.matches(weekday, second):
                    return rule.name
        for rule in self.periods:
            if not rule.holiday and rule.matches(weekday, second):
                return rule.name
        raise AssertionError("coverage was checked at construction")  # pragma: no cover

    def next_change(self, instant: datetime) -> datetime:
        """The next instant after ``instant`` at which the period may change.

        Candidates are the rule edges later today and the next local midnight.
        Around a DST change a wall time may not exist or exist twice; both
        readings are tried and the earliest one after ``instant`` wins: an early
        split is harmless (the period is looked up again there), a late one is not.
        """
        local = instant.astimezone(self.zone)
        today = local.date()
        naive_now = local.replace(tzinfo=None)
        walls = [datetime.combine(today, time(m // 60, m % 60)) for m in self._edges]
        walls.append(datetime.combine(today + timedelta(days=1), time(0)))
        best: datetime | None = None
        for wall in walls:
            if wall <= naive_now:
                continue
            for fold in (0, 1):
                candidate = wall.replace(tzinfo=self.zone, fold=fold).astimezone(UTC)
                if candidate > instant and (best is None or candidate < best):
                    best = candidate
            if best is not None:
                break
        return best if best is not None else instant + timedelta(hours=1)
