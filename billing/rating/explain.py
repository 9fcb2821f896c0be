"""Say in words how a call was priced: the answer to "what will this call cost?"."""

from __future__ import annotations

from datetime import timedelta

from billing.rating.engine import RatedCall, Span
from billing.rating.money import show_precise
from billing.rating.tariff import Tariff


def _span_line(call: RatedCall, span: Span, tariff: Tariff) -> str:
    start = (call.answer + timedelta(seconds=span.offset_s)).astimezone(tariff.zone)
    unit = "min" if span.unit_s == 60 else f"{span.unit_s} s"
    return (
        f"  {span.period:<10} from {start:%a %H:%M:%S} (second {span.offset_s}): "
        f"{span.increments} x {span.increment_s} s at {span.price} {call.currency}/{unit} "
        f"[rate {span.rate}, group {span.group + 1}] = {show_precise(span.cost).normalize():f}"
    )


def explain(call: RatedCall, tariff: Tariff) -> list[str]:
    answer = call.answer.astimezone(tariff.zone)
    lines = [
        f"tariff {call.tariff} ({tariff.timezone}, version {call.tariff_version or '-'})",
        f"destination {call.destination} (prefix {call.prefix or '(any)'}) for {call.number}, {call.category}",
        f"answered {answer:%Y-%m-%d %H:%M:%S %Z}, {call.duration_us / 1e6:g} s, billed {call.billed_s} s",
        f"  connect fee: {call.connect_fee} {call.currency}",
    ]
    lines += [_span_line(call, span, tariff) for span in call.spans]
    lines.append(f"  sum: {show_precise(call.raw).normalize():f} {call.currency}")
    if call.adjustment == "minimum":
        lines.append(f"  raised to the minimum cost per call: {show_precise(call.precise).normalize():f}")
    elif call.adjustment == "maximum":
        lines.append(f"  capped at the maximum cost per call: {show_precise(call.precise).normalize():f}")
    lines.append(
        f"  rounded {call.rounding.replace('_', ' ')} to {call.decimals} decimals: {call.cost} {call.currency}"
    )
    return lines
