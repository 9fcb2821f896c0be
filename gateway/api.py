"""The gateway's own HTTP API: registrations and calls in progress, per tenant."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.api_auth import require_scope, tenant_filter
from gateway.sip_service import SipService

SIP = web.AppKey("sip", SipService)
# With several SIP workers: the calls the others carry, by tenant (None: all).
CallsOf = Callable[[str | None], Awaitable[list[dict[str, object]]]]
OTHER_WORKERS_CALLS: web.AppKey[CallsOf] = web.AppKey("other_workers_calls")


def setup_api(app: web.Application, sip: SipService) -> None:
    app[SIP] = sip
    app.router.add_get("/api/registrations", registrations)
    app.router.add_get("/api/calls", calls)
    app.router.add_get("/api/trunks", trunks)


async def registrations(request: web.Request) -> web.Response:
    scope = await require_scope(request)
    tenant = tenant_filter(request, scope)
    return web.json_response({"registrations": await request.app[SIP].registrations(tenant)})


async def calls(request: web.Request) -> web.Response:
    scope = await require_scope(request)
    tenant = tenant_filter(request, scope)
    found = request.app[SIP].calls_snapshot(tenant)
    others = request.app.get(OTHER_WORKERS_CALLS)
    if others is not None:
        found = sorted(found + await others(tenant), key=lambda c: str(c["start"]))
    return web.json_response({"calls": found})


async def trunks(request: web.Request) -> web.Response:
    scope = await require_scope(request)
    tenant = tenant_filter(request, scope)
    manager = request.app[SIP].trunks
    return web.json_response({"trunks": manager.snapshot(tenant) if manager is not None else []})
