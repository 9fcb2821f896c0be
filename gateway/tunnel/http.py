"""The tunnel's HTTP routes, added to the gateway's aiohttp application.

``GET /api/tunnel`` returns links, paths (RTT, loss, jitter, state, bytes) and drop
counters as JSON, for the engineer at a site and for the status page.
"""

from __future__ import annotations

from aiohttp import web

from gateway.tunnel.service import TunnelService

TUNNEL_SERVICE = web.AppKey("tunnel_service", TunnelService)


async def _status(request: web.Request) -> web.Response:
    return web.json_response(request.app[TUNNEL_SERVICE].status())


def add_tunnel_routes(app: web.Application, service: TunnelService) -> None:
    app[TUNNEL_SERVICE] = service
    app.router.add_get("/api/tunnel", _status)
