"""HTTP routes of the PBX integration: click-to-call, HQ extension presence, AMI status.

``add_pbx_routes(app, service, auth)``: ``auth`` is the gateway's authentication, supplied by
the HTTP layer: it takes the request and returns the caller's tenant, or None for an
administrator, and raises ``HTTPUnauthorized`` / ``HTTPForbidden`` itself. A tenant reaches
only the PBX configured for that tenant.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.pbx.click_to_call import InvalidCallRequest, parse_request
from gateway.pbx.errors import AmiActionFailed, AmiNotConnected
from gateway.pbx.service import PbxService

Auth = Callable[[web.Request], str | None | Awaitable[str | None]]

PBX_SERVICE = web.AppKey("pbx_service", PbxService)
PBX_AUTH: web.AppKey[Auth] = web.AppKey("pbx_auth")


def add_pbx_routes(app: web.Application, service: PbxService, auth: Auth) -> None:
    app[PBX_SERVICE] = service
    app[PBX_AUTH] = auth
    app.router.add_post("/api/calls", post_call)
    app.router.add_get("/api/pbx/extensions", get_extensions)
    app.router.add_get("/api/pbx/status", get_status)


async def _authorise(request: web.Request) -> PbxService:
    service = request.app[PBX_SERVICE]
    result = request.app[PBX_AUTH](request)
    tenant = await result if inspect.isawaitable(result) else result
    if tenant is not None and tenant != service.config.tenant:
        raise web.HTTPForbidden(text=_error("this tenant has no PBX here"), content_type="application/json")
    return service


async def post_call(request: web.Request) -> web.Response:
    service = await _authorise(request)
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _json({"error": "expected a JSON body"}, 400)
    try:
        call = parse_request(body, service.config.tenant)
        started = await service.click_to_call(call)
    except InvalidCallRequest as exc:
        return _json({"error": str(exc)}, 400)
    except AmiNotConnected:
        return _json({"error": "the PBX is not reachable right now; try again"}, 503, {"Retry-After": "5"})
    except AmiActionFailed as exc:
        return _json({"error": f"the PBX refused the call: {exc.message}"}, 502)
    # 202: the HQ phone is ringing; the call itself goes on without this request.
    return _json({"session_id": started.session_id, "from": call.from_extension, "to": call.to}, 202)


async def get_extensions(request: web.Request) -> web.Response:
    service = await _authorise(request)
    rows = [{"extension": p.exten, "context": p.context, "state": p.state.value} for p in service.extensions()]
    return _json({"connected": service.client.ready, "extensions": rows}, 200)


async def get_status(request: web.Request) -> web.Response:
    service = await _authorise(request)
    return _json(service.status(), 200)


def _json(body: object, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json", headers=headers)


def _error(message: str) -> str:
    return json.dumps({"error": message})
