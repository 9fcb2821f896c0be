"""The billing HTTP API: the CLI's operations behind the gateway's authentication.

``add_billing_routes(app, service, scope)`` adds the routes. ``scope`` is the
lead's auth check: it maps a request to the tenant the caller may see, or None
for a provider administrator, and raises an aiohttp HTTP error (401/403) for
anyone else. A tenant's caller sees only its own accounts and months: another
tenant's account answers 404, as if it did not exist. Top-ups and rerating
move money and are for administrators only.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from billing.accounts import Account
from billing.errors import AccountError, BillingError
from billing.exports import FORMATS, TenantMonth, export_lines, month_reports, pdf_invoices
from billing.rating import explain
from billing.rating.money import format_money
from billing.rating.tariff import CATEGORIES
from billing.report import MonthReport
from billing.service import BillingService
from billing.timeutil import month_bounds

TenantScope = Callable[[web.Request], "str | None | Awaitable[str | None]"]


class _Api:
    def __init__(self, service: BillingService, scope: TenantScope, zone_of: Callable[[str], str]) -> None:
        self.service = service
        self.scope = scope
        self.zone_of = zone_of

    async def tenant(self, request: web.Request) -> str | None:
        seen = self.scope(request)
        return await seen if inspect.isawaitable(seen) else seen

    async def admin(self, request: web.Request) -> None:
        if await self.tenant(request) is not None:
            raise web.HTTPForbidden(reason="administrators only")

    async def account(self, request: web.Request, account_id: str) -> Account:
        tenant = await self.tenant(request)
        account = await self.service.account(account_id)
        if tenant is not None and account.tenant != tenant:
            raise AccountError(f"no account {account_id}")
        return account

    async def tenants(self, request: web.Request, wanted: str | None) -> list[TenantMonth]:
        tenant = await self.tenant(request)
        if tenant is not None:
            if wanted not in (None, tenant):
                raise web.HTTPNotFound(reason=f"no tenant {wanted}")
            names = [tenant]
        else:
            names = [wanted] if wanted else await self.service.store.tenants()
        return [TenantMonth(n, self.zone_of(n)) for n in names]

    # Handlers.

    async def balance(self, request: web.Request) -> web.Response:
        account = await self.account(request, request.match_info["account"])
        b = await self.service.balance(account.id)
        return web.json_response(
            {
                "account": account.id,
                "level": account.level,
                "payment": account.payment,
                "currency": self.service.config.currency,
                "balance": format_money(b.balance),
                "available": None if b.available is None else format_money(b.available),
                "spent_last_hour": format_money(b.spent_last_hour),
            }
        )

    async def topup(self, request: web.Request) -> web.Response:
        await self.admin(request)
        body = await _json(request)
        amount = _decimal(body.get("amount"))
        account = await self.account(request, request.match_info["account"])
        done = await self.service.topup(account.id, amount, body.get("reference"), str(body.get("note", "")))
        b = await self.service.balance(account.id)
        return web.json_response({"credited": done, "balance": format_money(b.balance)}, status=201 if done else 200)

    async def quote(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            start = datetime.fromisoformat(q["start"])
            duration = timedelta(seconds=float(q["duration"]))
            to, account_id = q["to"], q["account"]
        except (KeyError, ValueError):
            raise web.HTTPBadRequest(reason="need account, to, start (ISO with offset) and duration (s)") from None
        category = q.get("category", "voice")
        if start.tzinfo is None or category not in CATEGORIES or duration < timedelta(0):
            raise web.HTTPBadRequest(reason="start needs a UTC offset; category voice|video|bridged|iptv")
        account = await self.account(request, account_id)
        call, tariff = await self.service.quote(account.id, to, category, start, duration)
        return web.json_response(
            {
                "cost": str(call.cost),
                "currency": call.currency,
                "destination": call.destination,
                "prefix": call.prefix,
                "billed_s": call.billed_s,
                "tariff": call.tariff,
                "explanation": explain(call, tariff),
            }
        )

    async def rerate(self, request: web.Request) -> web.Response:
        await self.admin(request)
        body = await _json(request)
        results = []
        for t in await self.tenants(request, body.get("tenant")):
            start, end = month_bounds(str(body.get("month", "")), t.zone) if body.get("month") else (None, None)
            r = await self.service.rerate(tenant=t.tenant, start=start, end=end, only_unrated=bool(body.get("unrated")))
            results.append(
                {
                    "tenant": t.tenant,
                    "calls": r.calls,
                    "rated": r.rated,
                    "unrated": r.unrated,
                    "charged_before": format_money(r.charged_before),
                    "charged_after": format_money(r.charged_after),
                }
            )
        return web.json_response({"results": results})

    async def report(self, request: web.Request) -> web.Response:
        month = _month(request)
        reports = await month_reports(
            self.service.store, await self.tenants(request, request.query.get("tenant")), month
        )
        return web.json_response({"month": month, "tenants": [_report_json(r) for r in reports]})

    async def export(self, request: web.Request) -> web.StreamResponse:
        month = _month(request)
        fmt = request.query.get("format", "csv")
        if fmt not in FORMATS:
            raise web.HTTPBadRequest(reason=f"format must be one of {', '.join(FORMATS)}")
        tenants = await self.tenants(request, request.query.get("tenant"))
        name = f"seabridge-{month}.{'pdf' if fmt == 'pdf' else 'csv'}"
        if fmt == "pdf":
            import asyncio

            reports = await month_reports(self.service.store, tenants, month)
            target = self.service.config.target_per_minute
            body = await asyncio.to_thread(pdf_invoices, reports, target)
            return web.Response(
                body=body,
                content_type="application/pdf",
                headers={"Content-Disposition": f'attachment; filename="{name}"'},
            )
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/csv; charset=utf-8",
                "Content-Disposition": f'attachment; filename="{name}"',
            }
        )
        await response.prepare(request)
        async for chunk in export_lines(self.service.store, tenants, month, fmt):
            await response.write(chunk)
        await response.write_eof()
        return response


def _report_json(r: MonthReport) -> dict[str, Any]:
    average = r.total.per_minute()
    return {
        "tenant": r.tenant,
        "zone": r.zone,
        "currency": r.currency,
        "calls": r.total.calls,
        "minutes": str(r.total.minutes.quantize(Decimal("0.01"))),
        "charged": format_money(r.total.charged),
        "average_per_minute": None if average is None else str(average),
        "unrated": r.unrated,
        "unrated_examples": [{"session_id": s, "account": a, "reason": why} for s, a, why in r.unrated_examples],
        "by_site_category": [
            {
                "site": site,
                "category": cat,
                "calls": t.calls,
                "minutes": str(t.minutes.quantize(Decimal("0.01"))),
                "charged": format_money(t.charged),
            }
            for (site, cat), t in sorted(r.by_site_category.items())
        ],
    }


def _month(request: web.Request) -> str:
    month = request.query.get("month", "")
    try:
        month_bounds(month, "UTC")
    except ValueError as exc:
        raise web.HTTPBadRequest(reason=str(exc)) from None
    return month


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(reason="expected a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="expected a JSON object")
    return body


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise web.HTTPBadRequest(reason='amount must be a decimal string like "10.50"')
    try:
        return Decimal(value)
    except InvalidOperation:
        raise web.HTTPBadRequest(reason=f"{value!r} is not an amount") from None


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except BillingError as exc:
        return web.json_response({"error": str(exc)}, status=exc.http_status)


BILLING_API = web.AppKey("billing_api", _Api)


def add_billing_routes(
    app: web.Application,
    service: BillingService,
    scope: TenantScope,
    zone_of: Callable[[str], str] = lambda _tenant: "Asia/Shanghai",
    prefix: str = "/api/billing",
) -> None:
    """Add the billing API under ``prefix``. ``zone_of`` gives a tenant's zone for month boundaries."""
    api = _Api(service, scope, zone_of)
    app[BILLING_API] = api
    sub = web.Application(middlewares=[_errors])
    sub.router.add_get("/accounts/{account}/balance", api.balance)
    sub.router.add_post("/accounts/{account}/topup", api.topup)
    sub.router.add_get("/quote", api.quote)
    sub.router.add_post("/rerate", api.rerate)
    sub.router.add_get("/report", api.report)
    sub.router.add_get("/export", api.export)
    app.add_subapp(prefix, sub)
