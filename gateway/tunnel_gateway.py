"""The tunnel inside ``seabridge run``: links, forwards and renewal, trunks over it, status and metrics.

``gateway/app.py`` calls :func:`start_tunnel` once (it returns None when ``[tunnel]`` is
not enabled), builds the trunk manager from :attr:`GatewayTunnel.trunks`, and calls
:meth:`GatewayTunnel.attach_sip` once the SIP service listens and
:meth:`GatewayTunnel.add_routes` on its HTTP application.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.api_auth import require_scope
from gateway.config import GatewayConfig, TrunkConfig
from gateway.errors import StartupError
from gateway.tunnel.errors import TunnelError
from gateway.tunnel.metrics import register_metrics
from gateway.tunnel.run import RunningTunnel, build_tunnel
from gateway.tunnel.service import TunnelService
from gateway.tunnel_media import loopback_for
from gateway.tunnel_trunks import TunnelTrunks

log = logging.getLogger("seabridge.tunnel")


@dataclass
class GatewayTunnel:
    running: RunningTunnel
    glue: TunnelTrunks
    sip_host: str

    @property
    def service(self) -> TunnelService:
        return self.running.service

    @property
    def trunks(self) -> tuple[TrunkConfig, ...]:
        """Every configured trunk, tunnel trunks pointing at their local sockets: give these to the TrunkManager."""
        return self.glue.trunks

    def attach_sip(self, udp_port: int) -> None:
        self.glue.attach_sip((self.sip_host, udp_port))

    def add_routes(self, app: web.Application) -> None:
        """``GET /api/tunnel`` (admin tokens only): links, paths, counters, tunnel trunks and their media."""
        app[GATEWAY_TUNNEL] = self
        app.router.add_get("/api/tunnel", _status)

    def status(self) -> dict[str, object]:
        return {**self.service.status(), **self.glue.status()}


GATEWAY_TUNNEL = web.AppKey("gateway_tunnel", GatewayTunnel)


async def _status(request: web.Request) -> web.Response:
    scope = await require_scope(request)
    if not scope.admin:
        raise web.HTTPForbidden(
            text='{"error": "the tunnel is shared by every tenant"}', content_type="application/json"
        )
    return web.json_response(request.app[GATEWAY_TUNNEL].status())


async def start_tunnel(
    config: GatewayConfig, stack: AsyncExitStack, registry: CollectorRegistry
) -> GatewayTunnel | None:
    """Start the tunnel and the tunnel trunks' glue; both stop when ``stack`` unwinds."""
    if not config.tunnel.enabled:
        return None
    try:
        running = await build_tunnel(config)
    except (TunnelError, OSError) as exc:
        raise StartupError(f"cannot start the tunnel: {exc}") from None
    stack.push_async_callback(running.stop)
    register_metrics(running.service, registry)
    # A call the tunnel glue has neither SIP nor RTP for this long has ended unseen; the relay's
    # RTP timeout and ringing both come first.
    idle = float(config.media.rtp_timeout_s + config.sip.ring_timeout_s + 30)
    sip_host = loopback_for(config.sip.bind)
    glue = TunnelTrunks(running.service, config.trunks, sip_host, loopback_for(config.media.bind), idle)
    glue.start()
    stack.push_async_callback(glue.stop)
    log.info(
        "tunnel running",
        extra={"node": running.service.node, "tunnel_trunks": ",".join(c.trunk.name for c in glue.channels)},
    )
    return GatewayTunnel(running, glue, sip_host)
