"""The pure rating core: tariffs in, exact prices out. No I/O, no clock, no globals.

Everything here is deterministic in its arguments, so the same call record
rated twice with the same tariff gives byte-identical results (exports and
rerating rely on it).
"""

from billing.rating.engine import RatedCall, Span, max_duration, rate_call
from billing.rating.explain import explain
from billing.rating.money import ROUNDING_METHODS, RoundingMethod, round_exact
from billing.rating.tariff import (
    CATEGORIES,
    Category,
    Destination,
    PeriodRule,
    Rate,
    RateGroup,
    Tariff,
)

__all__ = [
    "CATEGORIES",
    "ROUNDING_METHODS",
    "Category",
    "Destination",
    "PeriodRule",
    "Rate",
    "RateGroup",
    "RatedCall",
    "RoundingMethod",
    "Span",
    "Tariff",
    "explain",
    "max_duration",
    "rate_call",
    "round_exact",
]
