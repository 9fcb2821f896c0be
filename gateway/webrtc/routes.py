"""The browser phone's HTTP routes: the page, its assets, sign-in, recent calls and the WebSocket.

Everything the page needs is package data (``gateway/webrtc/static``): no CDN,
so it works on a site with no internet. Responses carry a strict content
security policy: scripts and styles only from this gateway, no inline code.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from aiohttp import web

from gateway.cdr import CallRecord
from gateway.users import User
from gateway.webrtc.errors import TokenRejected
from gateway.webrtc.service import WebRtcService

WEBRTC = web.AppKey("webrtc", WebRtcService)

_ASSETS = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "icon.svg": "image/svg+xml",
    "manifest.json": "application/manifest+json",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self' blob: mediastream:; connect-src 'self' wss: ws:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def add_routes(app: web.Application, service: WebRtcService) -> None:
    app[WEBRTC] = service
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", asset)
    app.router.add_post("/api/session", sign_in)
    app.router.add_get("/api/phone/calls", calls)
    app.router.add_get("/ws", websocket)


def _static(name: str) -> bytes:
    return (resources.files("gateway.webrtc") / "static" / name).read_bytes()


async def page(request: web.Request) -> web.Response:
    return web.Response(body=_static("index.html"), content_type="text/html", headers=_SECURITY_HEADERS)


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    content_type = _ASSETS.get(name)
    if content_type is None:
        raise web.HTTPNotFound()
    return web.Response(body=_static(name), content_type=content_type, headers=_SECURITY_HEADERS)


async def sign_in(request: web.Request) -> web.Response:
    service = request.app[WEBRTC]
    try:
        body = await request.json()
        address, password = str(body["address"]), str(body["password"])
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": "bad_request"}, status=400)
    source = request.remote or "unknown"
    try:
        result = await service.login(address[:200], password[:200], source)
    except PermissionError as exc:
        return web.json_response({"error": "throttled", "message": str(exc)}, status=429)
    if result is None:
        return web.json_response({"error": "bad_credentials"}, status=401)
    token, claims = result
    return web.json_response({"token": token, "user": claims.address, "expires": claims.expires_at})


async def _user(request: web.Request) -> User:
    service = request.app[WEBRTC]
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise web.HTTPUnauthorized(text='{"error":"unauthorized"}', content_type="application/json")
    try:
        _claims, user = await service.user_for_token(token.strip())
    except TokenRejected:
        raise web.HTTPUnauthorized(text='{"error":"unauthorized"}', content_type="application/json") from None
    return user


def _call_json(record: CallRecord, user: User) -> dict[str, Any]:
    outgoing = record.caller == user.aor
    return {
        "start": record.start.isoformat(),
        "direction": "out" if outgoing else "in",
        "peer": record.callee if outgoing else record.caller,
        "seconds": round(record.billable_seconds),
        "disposition": record.disposition,
        "category": record.category,
    }


async def calls(request: web.Request) -> web.Response:
    user = await _user(request)
    records = await request.app[WEBRTC].recent_calls(user)
    return web.json_response({"calls": [_call_json(r, user) for r in records]})


async def websocket(request: web.Request) -> web.StreamResponse:
    return await request.app[WEBRTC].websocket(request)
