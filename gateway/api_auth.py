"""Bearer-token authentication for the HTTP API, shared by every package's routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.tokens import Scope, TokenStore

TOKENS = web.AppKey("tokens", TokenStore)

ApiAuth = Callable[[web.Request], Awaitable[Scope]]


async def require_scope(request: web.Request) -> Scope:
    """The caller's scope, or 401 (no/unknown token)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise web.HTTPUnauthorized(
            text='{"error": "a bearer token is required"}',
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="seabridge"'},
        )
    scope = await request.config_dict[TOKENS].check(token.strip())
    if scope is None:
        raise web.HTTPUnauthorized(
            text='{"error": "unknown or revoked token"}',
            content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="seabridge", error="invalid_token"'},
        )
    return scope


def tenant_filter(request: web.Request, scope: Scope) -> str | None:
    """The tenant a request is about: a tenant token is pinned to its own; admin may pick with ?tenant=."""
    asked = request.query.get("tenant")
    if scope.tenant is not None:
        if asked is not None and asked != scope.tenant:
            raise web.HTTPForbidden(text='{"error": "not your tenant"}', content_type="application/json")
        return scope.tenant
    return asked
