"""Benchmark: time and peak memory to export a month of one million calls (CSV, Asterisk, PDF).

    PYTHONPATH=. python bench/billing_export.py [--calls 1000000]

The month is written straight into a SQLite billing store (ratings from a few
hundred template calls rated by the real core). Each export then runs in its
own process, so its peak resident memory (ru_maxrss) is its own. Baselines
from the same run: reading the same rows through the store without formatting
them (time), and a process that exports an empty month (memory).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.billing_rate_store import prepare, records  # noqa: E402
from billing.exports import TenantMonth, export_lines, month_reports, pdf_invoices  # noqa: E402
from billing.records import CALL_COLUMNS, RATING_COLUMNS, call_row, rating_row  # noqa: E402
from billing.report import stream_month  # noqa: E402
from billing.store.open import open_store  # noqa: E402
from billing.timeutil import to_us  # noqa: E402

MONTH_START = to_us(datetime(2026, 9, 30, 16, 0, tzinfo=UTC))  # 1 October 00:00 in Beijing
MONTH_US = 31 * 86400 * 1_000_000 - 1_000_000_000


async def build(db: Path, n: int) -> None:
    store = await open_store("sqlite", sqlite_path=db)
    service = await prepare(store)
    templates = [(call_row(r), rating_row(await service.rate(r))) for r in records(400)]
    await store.close()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA synchronous=OFF")
    calls_sql = (
        f"INSERT INTO billing_calls ({', '.join(CALL_COLUMNS)}, current_run, status) "
        f"VALUES ({','.join('?' * (len(CALL_COLUMNS) + 2))})"
    )
    ratings_sql = f"INSERT INTO billing_ratings VALUES ({','.join('?' * len(RATING_COLUMNS))})"
    step = MONTH_US // n
    for lo in range(0, n, 50_000):
        calls, ratings = [], []
        for i in range(lo, min(n, lo + 50_000)):
            row, rating = templates[i % len(templates)]
            sid = f"{i:032x}"
            start = MONTH_START + i * step
            shift = start - row[10]
            answer = None if row[11] is None else row[11] + shift
            calls.append((sid, *row[1:10], start, answer, row[12] + shift, *row[13:], 1, rating[3]))
            ratings.append((sid, *rating[1:]))
        with conn:
            conn.executemany(calls_sql, calls)
            conn.executemany(ratings_sql, ratings)
    conn.close()


async def child(db: Path, fmt: str, out: Path) -> None:
    store = await open_store("sqlite", sqlite_path=db)
    tenants = [TenantMonth("acme", "Asia/Shanghai")]
    month = "2026-12" if fmt == "empty" else "2026-10"
    rows = 0
    if fmt == "raw":
        async for _row in stream_month(store, "acme", month, "Asia/Shanghai"):
            rows += 1
    elif fmt == "pdf":
        reports = await month_reports(store, tenants, month)
        rows = reports[0].total.calls
        pdf = pdf_invoices(reports, Decimal("0.2"))
        await asyncio.to_thread(out.write_bytes, pdf)
    else:
        with out.open("wb") as f:
            async for chunk in export_lines(store, tenants, month, "csv" if fmt == "empty" else fmt):
                f.write(chunk)
                rows += chunk.count(b"\n")
    await store.close()
    print(rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def run_child(db: Path, fmt: str, out: Path) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(db), fmt, str(out)],
        capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    rows, rss_kb = (int(x) for x in done.stdout.split())
    return elapsed, rows, rss_kb


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "billing.db"
        t0 = time.perf_counter()
        asyncio.run(build(db, n))
        print(f"built a month of {n} calls in {time.perf_counter() - t0:.1f} s ({db.stat().st_size >> 20} MiB)")
        raw_s, raw_rows, raw_kb = run_child(db, "raw", Path(tmp) / "raw")
        if raw_rows != n:
            raise SystemExit(f"baseline did no work: read {raw_rows} of {n} calls")
        _e, empty_rows, empty_kb = run_child(db, "empty", Path(tmp) / "empty.csv")
        print(f"baseline: read every call through the store: {raw_s:.1f} s, peak {raw_kb >> 10} MiB")
        print(f"baseline: export of an empty month: peak {empty_kb >> 10} MiB")
        for fmt in ("csv", "asterisk", "pdf"):
            out = Path(tmp) / f"out.{fmt}"
            elapsed, rows, kb = run_child(db, fmt, out)
            print(
                f"{fmt:<9} {elapsed:7.1f} s ({n / elapsed:8.0f} calls/s, {elapsed / raw_s:4.2f} x the read), "
                f"peak {kb >> 10} MiB (+{(kb - empty_kb) >> 10} MiB over the empty export), "
                f"{out.stat().st_size >> 20} MiB written"
            )
            if fmt != "pdf" and rows < n:
                raise SystemExit(f"{fmt}: wrote {rows} rows for {n} calls")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        asyncio.run(child(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])))
    else:
        parser = argparse.ArgumentParser(description=__doc__)
        parser.add_argument("--calls", type=int, default=1_000_000)
        main(parser.parse_args().calls)
