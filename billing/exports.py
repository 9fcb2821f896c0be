"""Monthly exports: detailed CSV, Asterisk Master.csv, PDF invoices.

Each streams the month's calls a page at a time (memory stays flat whatever the
month holds) in a fixed order, and writes nothing that depends on when or where
it runs, so the same ledger always exports to the same bytes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from billing.rating.money import format_money
from billing.records import Rating
from billing.report import MonthReport, stream_month
from billing.store.ledger import LedgerStore
from gateway.cdr import CallRecord

Progress = Callable[[int], None]
FORMATS = ("csv", "asterisk", "pdf")
_CHUNK_ROWS = 500


@dataclass(frozen=True)
class TenantMonth:
    tenant: str
    zone: str


CSV_COLUMNS = (
    "tenant", "site", "account", "session_id", "leg", "run", "status", "reason", "caller", "callee", "number",
    "category", "destination", "prefix", "start_utc", "answer_utc", "end_utc", "start_local", "duration_s",
    "billed_s", "tariff", "tariff_version", "periods", "connect_fee", "precise_cost", "cost", "charged",
    "currency", "rounding", "decimals", "disposition", "sip_status", "codec", "node",
)  # fmt: skip


def _iso(instant: datetime | None) -> str:
    return "" if instant is None else instant.isoformat(timespec="microseconds")


def _seconds(us: int) -> str:
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


def csv_row(record: CallRecord, rating: Rating, zone: ZoneInfo) -> list[str]:
    rated = rating.status == "rated"
    places = rating.decimals if rated else 2
    return [
        rating.tenant, rating.site, rating.account, record.session_id, record.leg, str(rating.run),
        rating.status, rating.reason, record.caller, record.callee, rating.number, record.category,
        rating.destination, rating.prefix, _iso(record.start), _iso(record.answer), _iso(record.end),
        record.start.astimezone(zone).isoformat(timespec="seconds"), _seconds(rating.duration_us),
        str(rating.billed_s), rating.tariff, rating.tariff_version, rating.spans,
        rating.connect_fee if rated else "", rating.precise if rated else "",
        format_money(rating.cost, places) if rated else "", format_money(rating.charged, places),
        rating.currency, rating.rounding, str(rating.decimals) if rated else "", record.disposition,
        str(record.sip_status), record.codec, record.node,
    ]  # fmt: skip


# Asterisk cdr_csv: every text field in double quotes (quotes doubled), integers bare,
# dates "YYYY-MM-DD HH:MM:SS" in local time, an unset date an empty unquoted field,
# no header, "\n" line ends. Columns as cdr_csv writes them with loguniqueid and
# loguserfield on (as in Asterisk's sample cdr.conf).
ASTERISK_COLUMNS = (
    "accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
    "start", "answer", "end", "duration", "billsec", "disposition", "amaflags", "uniqueid", "userfield",
)  # fmt: skip
_DISPOSITIONS = {
    "answered": "ANSWERED", "no_answer": "NO ANSWER", "cancelled": "NO ANSWER", "busy": "BUSY",
    "failed": "FAILED", "rejected": "FAILED",
}  # fmt: skip


def _q(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _user(uri: str) -> str:
    user = uri.split(":", 1)[1] if uri.lower().startswith(("sip:", "sips:", "tel:")) else uri
    return user.split("@", 1)[0].split(";", 1)[0]


def asterisk_line(record: CallRecord, rating: Rating, zone: ZoneInfo) -> str:
    def date(instant: datetime | None) -> str:
        return "" if instant is None else _q(instant.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"))

    src = _user(record.caller)
    duration = int((record.end - record.start).total_seconds())
    billsec = int((record.end - record.answer).total_seconds()) if record.answer else 0
    places = rating.decimals if rating.status == "rated" else 2
    cost = f"{format_money(rating.charged, places)} {rating.currency}"
    fields = [
        _q(rating.account), _q(src), _q(_user(record.callee)), _q(rating.tenant), _q(f'"{src}" <{src}>'),
        _q(f"PJSIP/{src}-{record.leg}"), _q(f"PJSIP/{_user(record.callee)}"), _q("Dial"), _q(record.callee),
        date(record.start), date(record.answer), date(record.end), str(duration), str(billsec),
        _q(_DISPOSITIONS.get(record.disposition, "FAILED")), _q("BILLING" if rating.status == "rated" else
        "DOCUMENTATION"), _q(record.session_id), _q(f"{rating.status};{cost};{rating.destination}"),
    ]  # fmt: skip
    return ",".join(fields) + "\n"


async def export_lines(
    store: LedgerStore, tenants: Sequence[TenantMonth], month: str, fmt: str, progress: Progress | None = None
) -> AsyncIterator[bytes]:
    """CSV or Asterisk export as chunks of bytes."""
    if fmt not in ("csv", "asterisk"):
        raise ValueError(f"unknown text export format {fmt!r}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    if fmt == "csv":
        writer.writerow(CSV_COLUMNS)
    rows = 0
    for t in tenants:
        zone = ZoneInfo(t.zone)
        async for record, rating in stream_month(store, t.tenant, month, t.zone):
            if fmt == "csv":
                writer.writerow(csv_row(record, rating, zone))
            else:
                buf.write(asterisk_line(record, rating, zone))
            rows += 1
            if rows % _CHUNK_ROWS == 0:
                yield buf.getvalue().encode()
                buf.seek(0)
                buf.truncate()
                if progress:
                    progress(_CHUNK_ROWS)
    yield buf.getvalue().encode()
    if progress:
        progress(rows % _CHUNK_ROWS)


async def month_reports(
    store: LedgerStore, tenants: Sequence[TenantMonth], month: str, progress: Progress | None = None
) -> list[MonthReport]:
    from billing.report import MonthReport
    from billing.timeutil import month_bounds

    reports = []
    for t in tenants:
        start, end = month_bounds(month, t.zone)
        report = MonthReport(t.tenant, month, t.zone, start, end)
        n = 0
        async for record, rating in stream_month(store, t.tenant, month, t.zone):
            report.add(record, rating)
            n += 1
            if progress and n % _CHUNK_ROWS == 0:
                progress(_CHUNK_ROWS)
        if progress:
            progress(n % _CHUNK_ROWS)
        reports.append(report)
    return reports


def pdf_invoices(reports: Sequence[MonthReport], target: Decimal) -> bytes:
    from billing.invoice import render_invoices

    return render_invoices(reports, target)
