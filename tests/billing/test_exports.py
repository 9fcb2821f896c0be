"""Monthly exports read back: Asterisk Master.csv by a strict CSV reader, the PDF through poppler."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from billing.exports import (
    ASTERISK_COLUMNS,
    CSV_COLUMNS,
    TenantMonth,
    export_lines,
    month_reports,
    pdf_invoices,
)
from billing.service import BillingService
from tests.billing.records import call

OCT = [TenantMonth("acme", "Asia/Shanghai"), TenantMonth("globex", "Africa/Kinshasa")]


async def populate(service: BillingService) -> dict[str, object]:
    s = service
    for user, site in (("alice@acme", "kinshasa"), ("bob@acme", "kampala"), ("gina@globex", "lubumbashi")):
        await s.ensure_account(user, site=site, payment="postpaid")
    await s.set_plan("acme", "cn", datetime(2026, 1, 1, tzinfo=UTC))
    await s.set_plan("globex", "flat", datetime(2026, 1, 1, tzinfo=UTC))
    monday_10 = datetime(2026, 10, 5, 2, 0, tzinfo=UTC)  # 10:00 in Beijing, peak
    calls = [
        call(monday_10, 125),  # alice: 0.20 + 65 s at 0.20/min = 0.4167 -> 0.42
        call(monday_10 + timedelta(days=1), 60, account="bob@acme", site="kampala"),  # 0.20
        call(monday_10 + timedelta(days=2), 600, account="bob@acme", site="kampala", category="bridged"),  # 2.00
        call(None, account="alice@acme"),  # not answered: free
        call(monday_10, 60, account="alice@acme", to="sip:+4420@gw"),  # no UK rate: unrated
        call(datetime(2026, 9, 30, 16, 30, tzinfo=UTC), 60),  # 1 October 00:30 in Beijing: October, off-peak 0.10
        call(datetime(2026, 10, 31, 16, 30, tzinfo=UTC), 60),  # 1 November 00:30 in Beijing: not October
        call(datetime(2026, 10, 31, 21, 0, tzinfo=UTC), 30, account="gina@globex", site="lubumbashi"),  # 22:00 Kinshasa
        call(monday_10, 60, account="alice@acme", leg="b"),  # the other leg: audit only, not exported
    ]
    for record in calls:
        await s.call_ended(record)
    return {"calls": calls}


async def export_text(service: BillingService, fmt: str, tenants: list[TenantMonth] = OCT) -> bytes:
    return b"".join([chunk async for chunk in export_lines(service.store, tenants, "2026-10", fmt)])


async def test_the_asterisk_export_reads_as_master_csv(service: BillingService) -> None:
    await populate(service)
    data = await export_text(service, "asterisk")
    assert data == await export_text(service, "asterisk")  # byte-reproducible
    text = data.decode()
    assert text.endswith("\n") and "\r" not in text
    rows = list(csv.reader(io.StringIO(text), strict=True))
    assert all(len(r) == len(ASTERISK_COLUMNS) == 18 for r in rows)
    assert len(rows) == 7  # 6 acme calls of October (both zones' boundaries respected) + 1 globex
    by_col = [dict(zip(ASTERISK_COLUMNS, r, strict=True)) for r in rows]
    first = text.splitlines()[0]
    assert first.startswith('"alice@acme","alice","+8613800000000","acme","""alice"" <alice>","PJSIP/alice-a",')
    assert re.search(r',"2026-10-01 00:29:55","2026-10-01 00:30:00","2026-10-01 00:31:00",65,60,"ANSWERED",', first)
    unanswered = next(r for r in by_col if r["disposition"] == "NO ANSWER")
    assert unanswered["answer"] == "" and unanswered["billsec"] == "0"
    no_answer_line = next(ln for ln in text.splitlines() if '"NO ANSWER"' in ln)
    assert '"2026-10-05 09:59:55",,"2026-10-05 10:00:15",20,0,' in no_answer_line  # unset date: bare
    gina = by_col[-1]
    assert (gina["accountcode"], gina["start"], gina["billsec"]) == (
        "gina@globex",
        "2026-10-31 21:59:55",
        "30",
    )
    assert {r["uniqueid"] for r in by_col} == {r["uniqueid"] for r in by_col if len(r["uniqueid"]) == 32}
    assert next(r for r in by_col if r["dst"] == "+4420")["userfield"].startswith("unrated;0.00 CNY")


async def test_the_csv_export_has_every_rating_detail(service: BillingService) -> None:
    await populate(service)
    data = await export_text(service, "csv", OCT[:1])
    rows = list(csv.DictReader(io.StringIO(data.decode()), strict=True))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert len(rows) == 6
    rated = [r for r in rows if r["status"] == "rated"]
    assert sum(Decimal(r["charged"]) for r in rows) == Decimal(
        "2.67"
    )  # 0.05 (1 October, a holiday) + 0.42 + 0.20 + 2.00
    alice = next(r for r in rated if r["duration_s"] == "125.000000")
    assert (alice["cost"], alice["precise_cost"], alice["billed_s"], alice["destination"]) == (
        "0.42",
        "0.416666666667",
        "125",
        "China",
    )
    assert alice["periods"] == "peak@0:1x60s*0.20/60;peak@60:65x1s*0.20/60"
    assert alice["start_local"] == "2026-10-05T09:59:55+08:00"
    unrated = next(r for r in rows if r["status"] == "unrated")
    assert "no voice destination for '4420'" in unrated["reason"]


def _pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


async def test_the_pdf_invoice_renders_with_its_totals(service: BillingService, tmp_path: Path) -> None:
    await populate(service)
    reports = await month_reports(service.store, OCT, "2026-10")
    pdf = pdf_invoices(reports, Decimal("0.2"))
    assert pdf == pdf_invoices(await month_reports(service.store, OCT, "2026-10"), Decimal("0.2"))
    path = tmp_path / "invoice.pdf"
    path.write_bytes(pdf)
    text = await asyncio.to_thread(_pdf_text, path)
    assert "Tenant: acme" in text and "Tenant: globex" in text
    assert "Amount due: 2.67 CNY" in text
    assert re.search(r"kampala total\s+2\s+11\.00\s+2\.20", text)
    assert re.search(r"kinshasa\s+voice\s+4\s+4\.08\s+0\.47", text)
    # 2.67 CNY for 15.0833 minutes of talk.
    assert "Average cost per minute: 0.1770 CNY (within the 0.2 CNY target)" in text
    assert "Unrated calls (not yet charged): 1" in text
    assert "Amount due: 0.30 CNY" in text  # globex: 30 s at 0.60/min
    await asyncio.to_thread(check_rendered, path, tmp_path)


def check_rendered(path: Path, tmp_path: Path) -> None:
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(path), str(tmp_path / "page")], check=True, timeout=60)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) == 2
    assert all(p.stat().st_size > 1000 for p in pages)
    ppm = subprocess.run(["pdftoppm", "-r", "20", "-f", "1", "-l", "1", str(path)], capture_output=True, check=True)
    pixels = ppm.stdout.split(b"\n", 3)[3]
    # The bar chart is drawn in blue (51, 102, 178): some pixels of that colour are on the page.
    assert any(pixels[i] < 90 and pixels[i + 2] > 150 for i in range(0, len(pixels) - 2, 3))


@pytest.mark.parametrize("fmt", ["csv", "asterisk", "pdf"])
def test_the_export_command_writes_the_file(tmp_path: Path, fmt: str) -> None:
    from billing.runtime import open_billing
    from gateway.config import load_config
    from tests.billing.test_cli_import import seabridge

    config_path = tmp_path / "gw.toml"
    tariffs = tmp_path / "tariffs"
    tariffs.mkdir()
    repo = Path(__file__).resolve().parents[2]
    (tariffs / "acme.toml").write_bytes((repo / "config/tariffs/acme-standard.toml").read_bytes())
    config_path.write_text(
        f'data_dir = "{tmp_path / "var"}"\n[billing]\ntariff_dir = "{tariffs}"\n'
        '[[tenants]]\ndomain = "acme"\ntimezone = "Asia/Shanghai"\n'
    )

    async def setup() -> None:
        service = await open_billing(load_config(config_path))
        try:
            await service.ensure_account("alice@acme", site="kinshasa", payment="postpaid")
            await service.set_plan("acme", "acme-standard", datetime(2026, 1, 1, tzinfo=UTC))
            await service.call_ended(call(datetime(2026, 10, 5, 10, 30, tzinfo=UTC), 125))
        finally:
            await service.store.close()

    asyncio.run(setup())
    out = tmp_path / f"oct.{fmt}"
    done = seabridge("billing", "export", "--month", "2026-10", "--format", fmt, "--output", str(out),
                     "-c", str(config_path), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stderr and out.exists()
    first = out.read_bytes()
    again = seabridge("billing", "export", "--month", "2026-10", "--format", fmt, "--output", str(out),
                      "-c", str(config_path), cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0 and out.read_bytes() == first
    if fmt == "pdf":
        assert "Amount due: 0.40 CNY" in _pdf_text(out)  # China mobile: 0.02 + 0.18 + 65 s at 0.18/min
    else:
        assert b"alice@acme" in first
