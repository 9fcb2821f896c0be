"""Rating a call record: which account, which plan, which tariff, what it costs. Pure: no I/O.

The outcome is a ``Rating`` (one *run* of rating one leg), which the store
keeps forever: a rerate adds a run, it never edits one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

from billing.accounts import Account
from billing.errors import NoRateError
from billing.rating import Tariff, rate_call
from billing.rating.engine import RatedCall
from billing.rating.money import show_precise, to_micros
from billing.rating.numbers import normalize_number
from billing.timeutil import from_us, to_us
from gateway.cdr import CallRecord

Status = Literal["rated", "unrated", "free", "audit"]


@dataclass(frozen=True)
class Rating:
    session_id: str
    leg: str
    run: int
    status: Status
    reason: str
    account: str
    tenant: str
    site: str
    tariff: str
    tariff_version: str
    number: str
    destination: str
    prefix: str
    duration_us: int
    billed_s: int
    connect_fee: str
    precise: str
    adjustment: str
    cost: int  # micro-units, rounded once
    charged: int  # what the ledger took: the cost, capped at credit granted live
    currency: str
    rounding: str
    decimals: int
    spans: str
    rated_us: int


RATING_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Rating))


def spans_text(call: RatedCall) -> str:
    """'peak@0:60x1s*0.18/60;offpeak@60:...' : period@offset:increments x size * price/unit."""
    return ";".join(f"{s.period}@{s.offset_s}:{s.increments}x{s.increment_s}s*{s.price}/{s.unit_s}" for s in call.spans)


@dataclass(frozen=True)
class RatingContext:
    """What the store knows about the call's account when it is rated."""

    account: Account | None
    plan: str | None  # tariff name from the rate plans, or the configured default
    tariff: Tariff | None
    currency: str
    international_prefix: str
    rated_leg: str = "a"


def rate_record(record: CallRecord, ctx: RatingContext, run: int, now: datetime, cap: int | None = None) -> Rating:
    account = ctx.account
    base: dict[str, Any] = {
        "session_id": record.session_id,
        "leg": record.leg,
        "run": run,
        "account": record.account,
        "tenant": account.tenant if account else record.tenant,
        "site": account.site if account else record.site,
        "tariff": "",
        "tariff_version": "",
        "number": normalize_number(record.callee, ctx.international_prefix),
        "destination": "",
        "prefix": "",
        "duration_us": to_us(record.end) - to_us(record.answer) if record.answer else 0,
        "billed_s": 0,
        "connect_fee": "0",
        "precise": "0",
        "adjustment": "",
        "cost": 0,
        "charged": 0,
        "currency": ctx.tariff.currency if ctx.tariff else ctx.currency,
        "rounding": "",
        "decimals": 0,
        "spans": "",
        "rated_us": to_us(now),
    }
    base["duration_us"] = max(0, base["duration_us"])
    if not record.ingress or record.leg != ctx.rated_leg:
        return Rating(status="audit", reason="not the rated leg of the ingress gateway", **base)
    if record.answer is None:
        return Rating(status="free", reason=f"not answered ({record.disposition})", **base)
    if account is None:
        return Rating(status="unrated", reason=f"unknown account {record.account!r}", **base)
    if ctx.plan is None:
        return Rating(status="unrated", reason=f"no rate plan for {account.id} at {record.answer.isoformat()}", **base)
    tariff = ctx.tariff
    if tariff is None:
        return Rating(status="unrated", reason=f"rate plan names tariff {ctx.plan!r}, which is not loaded", **base)
    base |= {"tariff": tariff.name, "tariff_version": tariff.version}
    try:
        call = rate_call(tariff, base["number"], record.category, record.answer, record.end - record.answer)
    except NoRateError as exc:
        return Rating(status="unrated", reason=str(exc), **base)
    cost = to_micros(call.cost)
    base |= {
        "destination": call.destination,
        "prefix": call.prefix,
        "billed_s": call.billed_s,
        "connect_fee": str(call.connect_fee),
        "precise": str(show_precise(call.precise)),
        "adjustment": call.adjustment,
        "cost": cost,
        "charged": cost if cap is None else min(cost, cap),
        "rounding": call.rounding,
        "decimals": call.decimals,
        "spans": spans_text(call),
    }
    reason = "" if cap is None or cost <= cap else "charge capped at the credit granted during the call"
    return Rating(status="rated", reason=reason, **base)


# Calls as stored rows (the gateway's CallRecord, times as epoch microseconds).

CALL_COLUMNS = (
    "session_id", "leg", "node", "tenant", "site", "caller", "callee", "account", "ingress", "category",
    "start_us", "answer_us", "end_us", "disposition", "sip_status", "codec", "packets_in", "packets_out",
    "bytes_in", "bytes_out", "call_id", "ended_by",
)  # fmt: skip


def call_row(record: CallRecord) -> tuple[Any, ...]:
    return (
        record.session_id, record.leg, record.node, record.tenant, record.site, record.caller, record.callee,
        record.account, int(record.ingress), record.category, to_us(record.start),
        to_us(record.answer) if record.answer else None, to_us(record.end), record.disposition,
        record.sip_status, record.codec, record.packets_in, record.packets_out, record.bytes_in,
        record.bytes_out, record.call_id, record.ended_by,
    )  # fmt: skip


def record_from_row(row: tuple[Any, ...]) -> CallRecord:
    v = dict(zip(CALL_COLUMNS, row, strict=True))
    return CallRecord(
        session_id=v["session_id"], leg=v["leg"], node=v["node"], tenant=v["tenant"], site=v["site"],
        caller=v["caller"], callee=v["callee"], account=v["account"], ingress=bool(v["ingress"]),
        category=v["category"], start=from_us(v["start_us"]),
        answer=from_us(v["answer_us"]) if v["answer_us"] is not None else None, end=from_us(v["end_us"]),
        disposition=v["disposition"], sip_status=v["sip_status"], codec=v["codec"],
        packets_in=v["packets_in"], packets_out=v["packets_out"], bytes_in=v["bytes_in"],
        bytes_out=v["bytes_out"], call_id=v["call_id"], ended_by=v["ended_by"],
    )  # fmt: skip


def rating_row(r: Rating) -> tuple[Any, ...]:
    return tuple(getattr(r, c) for c in RATING_COLUMNS)


def rating_from_row(row: tuple[Any, ...]) -> Rating:
    return Rating(*row)
