"""The billing HTTP API on a real aiohttp server on 127.0.0.1, with a stand-in for the lead's auth check."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp import web

from billing.http import add_billing_routes
from billing.service import BillingService
from tests.billing.records import call

TOKENS = {"admin-secret": None, "acme-secret": "acme", "globex-secret": "globex"}


def scope(request: web.Request) -> str | None:
    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if token not in TOKENS:
        raise web.HTTPUnauthorized()
    return TOKENS[token]


@pytest.fixture
async def api(service: BillingService) -> AsyncIterator[str]:
    await service.ensure_account("alice@acme", site="kinshasa", payment="prepaid")
    await service.ensure_account("gina@globex", site="lubumbashi", payment="postpaid")
    await service.set_plan("acme", "cn", datetime(2026, 1, 1, tzinfo=UTC))
    app = web.Application()
    add_billing_routes(app, service, scope)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/api/billing"
    finally:
        await runner.cleanup()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_balances_and_topups_respect_tenants(api: str) -> None:
    async with aiohttp.ClientSession() as http:
        r = await http.get(f"{api}/accounts/alice@acme/balance")
        assert r.status == 401
        r = await http.post(f"{api}/accounts/alice@acme/topup", json={"amount": "5"}, headers=auth("acme-secret"))
        assert r.status == 403  # a tenant does not credit itself
        body = {"amount": "12.50", "reference": "wire-7"}
        r = await http.post(f"{api}/accounts/alice@acme/topup", json=body, headers=auth("admin-secret"))
        assert (r.status, await r.json()) == (201, {"credited": True, "balance": "12.50"})
        r = await http.post(f"{api}/accounts/alice@acme/topup", json=body, headers=auth("admin-secret"))
        assert (r.status, (await r.json())["credited"]) == (200, False)
        r = await http.get(f"{api}/accounts/alice@acme/balance", headers=auth("acme-secret"))
        assert (await r.json())["available"] == "12.50"
        r = await http.get(f"{api}/accounts/alice@acme/balance", headers=auth("globex-secret"))
        assert (r.status, await r.json()) == (404, {"error": "no account alice@acme"})
        r = await http.post(f"{api}/accounts/alice@acme/topup", json={"amount": 1.5}, headers=auth("admin-secret"))
        assert r.status == 400  # amounts are decimal strings, never floats


async def test_quote_report_rerate_and_export(api: str, service: BillingService) -> None:
    await service.call_ended(call(datetime(2026, 10, 5, 2, 0, tzinfo=UTC), 125))
    await service.call_ended(call(datetime(2026, 10, 5, 2, 0, tzinfo=UTC), 60, account="gina@globex"))
    async with aiohttp.ClientSession() as http:
        params = {"account": "alice@acme", "to": "+8613800000000", "start": "2026-10-05T10:00:00+08:00",
                  "duration": "125"}  # fmt: skip
        r = await http.get(f"{api}/quote", params=params, headers=auth("acme-secret"))
        quote = await r.json()
        assert (quote["cost"], quote["destination"], quote["billed_s"]) == ("0.42", "China", 125)
        assert any("peak" in line for line in quote["explanation"])
        r = await http.get(f"{api}/quote", params=params, headers=auth("globex-secret"))
        assert r.status == 404
        r = await http.get(f"{api}/report", params={"month": "2026-10"}, headers=auth("acme-secret"))
        report = await r.json()
        assert [t["tenant"] for t in report["tenants"]] == ["acme"]  # never another tenant's
        assert report["tenants"][0]["charged"] == "0.42"
        r = await http.get(
            f"{api}/report", params={"month": "2026-10", "tenant": "globex"}, headers=auth("acme-secret")
        )
        assert r.status == 404
        r = await http.get(f"{api}/report", params={"month": "2026-10"}, headers=auth("admin-secret"))
        assert [t["tenant"] for t in (await r.json())["tenants"]] == ["acme", "globex"]
        assert [t["unrated"] for t in (await r.json())["tenants"]] == [0, 1]
        r = await http.post(f"{api}/rerate", json={"month": "2026-10"}, headers=auth("acme-secret"))
        assert r.status == 403
        r = await http.post(f"{api}/rerate", json={"month": "2026-10", "tenant": "acme"}, headers=auth("admin-secret"))
        assert (await r.json())["results"][0]["calls"] == 1
        r = await http.get(f"{api}/export", params={"month": "2026-10", "format": "asterisk"},
                           headers=auth("acme-secret"))  # fmt: skip
        rows = list(csv.reader(io.StringIO(await r.text()), strict=True))
        assert r.headers["Content-Type"].startswith("text/csv")
        assert [row[0] for row in rows] == ["alice@acme"]
        r = await http.get(f"{api}/export", params={"month": "2026-10", "format": "pdf"}, headers=auth("acme-secret"))
        assert r.headers["Content-Type"] == "application/pdf" and (await r.read()).startswith(b"%PDF")
        r = await http.get(f"{api}/export", params={"month": "October"}, headers=auth("acme-secret"))
        assert r.status == 400
