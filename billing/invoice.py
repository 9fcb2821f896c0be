"""PDF invoices: one or more pages per tenant, drawn with reportlab in invariant mode.

Invariant mode leaves out the creation date and random document id, so the
same month renders to the same bytes. Only the PDF base fonts are used (never
embedded), which keeps files small and identical across machines.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from decimal import Decimal

from reportlab.lib.pagesizes import A4
from reportlab.pdfgen.canvas import Canvas

from billing.rating.money import format_money
from billing.report import MonthReport, Totals

MARGIN = 50
WIDTH, HEIGHT = A4
COLUMNS = (("Site", MARGIN), ("Category", 180), ("Calls", 300), ("Minutes", 380), ("Amount", 470))


def _minutes(t: Totals) -> str:
    return str(t.minutes.quantize(Decimal("0.01")))


class _Page:
    def __init__(self, canvas: Canvas, report: MonthReport) -> None:
        self.c = canvas
        self.report = report
        self.y = HEIGHT - MARGIN

    def line(self, text: str, size: int = 10, font: str = "Helvetica", gap: int = 14) -> None:
        self.need(gap)
        self.c.setFont(font, size)
        self.c.drawString(MARGIN, self.y, text)
        self.y -= gap

    def need(self, space: float) -> None:
        if self.y - space < MARGIN:
            self.c.showPage()
            self.y = HEIGHT - MARGIN
            self.c.setFont("Helvetica", 8)
            self.c.drawString(MARGIN, self.y, f"{self.report.tenant} {self.report.month} (continued)")
            self.y -= 20

    def row(self, cells: Sequence[str], font: str = "Helvetica") -> None:
        self.need(14)
        self.c.setFont(font, 9)
        for (_title, x), text in zip(COLUMNS, cells, strict=True):
            if x >= 300:
                self.c.drawRightString(x + 60, self.y, text)
            else:
                self.c.drawString(x, self.y, text)
        self.y -= 14


def _chart(page: _Page, report: MonthReport) -> None:
    days = report.days()
    minutes = [Decimal(report.daily_seconds_us.get(d, 0)) / 60_000_000 for d in days]
    height, top = 140, max(minutes, default=Decimal(0))
    page.need(height + 60)
    page.line("Minutes of talk per day", 11, "Helvetica-Bold", 18)
    base = page.y - height
    width = (WIDTH - 2 * MARGIN) / max(len(days), 1)
    c = page.c
    c.setStrokeColorRGB(0.6, 0.6, 0.6)
    c.line(MARGIN, base, WIDTH - MARGIN, base)
    c.setFont("Helvetica", 7)
    c.drawString(MARGIN, base + height + 4, f"max {top.quantize(Decimal('0.1'))} min")
    for i, (day, value) in enumerate(zip(days, minutes, strict=True)):
        bar = float(value / top * height) if top else 0.0
        c.setFillColorRGB(0.20, 0.40, 0.70)
        c.rect(MARGIN + i * width + 1, base, max(width - 2, 1), bar, stroke=0, fill=1)
        if i % 5 == 0 or i == len(days) - 1:
            c.setFillColorRGB(0, 0, 0)
            c.drawCentredString(MARGIN + (i + 0.5) * width, base - 10, str(day.day))
    c.setFillColorRGB(0, 0, 0)
    page.y = base - 26


def _tenant(canvas: Canvas, report: MonthReport, target: Decimal) -> None:
    page = _Page(canvas, report)
    cur = report.currency
    page.line("Seabridge invoice", 18, "Helvetica-Bold", 26)
    page.line(f"Tenant: {report.tenant}", 12, "Helvetica-Bold", 16)
    page.line(f"Month: {report.month}  (time zone {report.zone})  Currency: {cur}")
    page.y -= 8
    page.row([t for t, _x in COLUMNS], "Helvetica-Bold")
    for site in report.sites():
        site_total = Totals()
        for (s, category), totals in sorted(report.by_site_category.items()):
            if s != site:
                continue
            page.row([site, category, str(totals.calls), _minutes(totals), format_money(totals.charged)])
            site_total.calls += totals.calls
            site_total.seconds_us += totals.seconds_us
            site_total.charged += totals.charged
        cells = [
            f"{site} total",
            "",
            str(site_total.calls),
            _minutes(site_total),
            format_money(site_total.charged),
        ]
        page.row(cells, "Helvetica-Bold")
    t = report.total
    page.y -= 6
    page.row(["Total", "", str(t.calls), _minutes(t), format_money(t.charged)], "Helvetica-Bold")
    page.y -= 12
    page.line(f"Amount due: {format_money(t.charged)} {cur}", 13, "Helvetica-Bold", 20)
    average = t.per_minute()
    if average is None:
        page.line(f"Average cost per minute: no talk time (target {target} {cur})")
    else:
        verdict = "within" if average <= target else "ABOVE"
        page.line(f"Average cost per minute: {average} {cur} ({verdict} the {target} {cur} target)", 11)
    page.line(f"Answered calls: {t.answered} of {t.calls}; billed time {t.billed_s} s")
    if report.unrated:
        page.line(f"Unrated calls (not yet charged): {report.unrated}", 11, "Helvetica-Bold")
    page.y -= 12
    _chart(page, report)
    canvas.showPage()


def render_invoices(reports: Sequence[MonthReport], target: Decimal) -> bytes:
    out = io.BytesIO()
    canvas = Canvas(out, pagesize=A4, invariant=1, pageCompression=1)
    canvas.setTitle("Seabridge invoices " + (reports[0].month if reports else ""))
    canvas.setAuthor("Seabridge")
    for report in reports:
        _tenant(canvas, report, target)
    if not reports:
        canvas.drawString(MARGIN, HEIGHT - MARGIN, "No tenants.")
        canvas.showPage()
    canvas.save()
    return out.getvalue()
