"""Exact money: costs are summed as Fractions and rounded once, at the end of a call.

Prices divide by their unit (0.10 CNY per 60 s is 1/600 CNY a second), which
no decimal represents exactly; summing Fractions and rounding the exact total
once means "half" cases are decided on the true value, not on a value already
rounded at some precision. Stored amounts are integer micro-units (1e-6 of the
currency), so databases sum them exactly.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Literal

RoundingMethod = Literal["up", "down", "half_up", "half_down", "half_even"]
ROUNDING_METHODS: tuple[RoundingMethod, ...] = ("up", "down", "half_up", "half_down", "half_even")

MICROS = 1_000_000
MAX_DECIMALS = 6  # the ledger keeps micro-units
PRECISE_PLACES = 12  # how the unrounded cost is shown and stored

_HALF = Fraction(1, 2)


def round_exact(value: Fraction, decimals: int, method: RoundingMethod) -> Decimal:
    """Round ``value`` to ``decimals`` places; "up"/"down" are towards +/- infinity."""
    scaled = value * 10**decimals
    floor = scaled.numerator // scaled.denominator
    rest = scaled - floor
    bump = False
    if method == "up":
        bump = rest > 0
    elif method == "half_up":
        bump = rest >= _HALF
    elif method == "half_down":
        bump = rest > _HALF
    elif method == "half_even":
        bump = rest > _HALF or (rest == _HALF and floor % 2 == 1)
    return Decimal(floor + int(bump)).scaleb(-decimals)


def show_precise(value: Fraction) -> Decimal:
    """The unrounded cost as a decimal of PRECISE_PLACES places (for display and audit)."""
    return round_exact(value, PRECISE_PLACES, "half_even")


def to_micros(amount: Decimal) -> int:
    scaled = amount.scaleb(6)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} has more than {MAX_DECIMALS} decimal places")
    return int(scaled)


def from_micros(micros: int) -> Decimal:
    return Decimal(micros).scaleb(-6)


def format_money(micros: int, decimals: int = 2) -> str:
    """Micro-units to a fixed-point string, never via float."""
    amount = from_micros(micros)
    return str(amount.quantize(Decimal(1).scaleb(-decimals))) if decimals else str(int(amount))
