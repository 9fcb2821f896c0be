"""Building the browser phone at start-up: the one function ``gateway/app.py`` calls.

    webrtc = await start_webrtc(config, users, cdrs, sip_address, registry, clock, stack)
    webrtc.add_routes(app)               # before the AppRunner is set up
    await webrtc.serve_https(runner)     # after; the page is also on the plain loopback site

Transport constants (aioice STUN retransmission, consent) are set here, from
``[webrtc]``, before any connection exists.
"""

from __future__ import annotations

import logging
import ssl
from contextlib import AsyncExitStack
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.cdr_store import CdrStore
from gateway.clock import Clock
from gateway.config import GatewayConfig
from gateway.secrets_store import load_or_create
from gateway.sip.transaction import TimerConfig
from gateway.users import UserStore
from gateway.webrtc import aiortc_glue, certs, routes
from gateway.webrtc.metrics import WebRtcMetrics
from gateway.webrtc.service import WebRtcService
from gateway.webrtc.tokens import TokenIssuer

Addr = tuple[str, int]
log = logging.getLogger("seabridge.webrtc")
TOKEN_SECRET = "webrtc_token_secret"


@dataclass
class WebRtcGateway:
    service: WebRtcService
    ssl_context: ssl.SSLContext
    bind: str
    port: int
    https_port: int = 0

    @property
    def agent_address(self) -> Addr:
        """Where the browsers' SIP user agent sends from (the SIP service's peer for every browser call)."""
        return self.service.agent_address

    def add_routes(self, app: web.Application) -> None:
        routes.add_routes(app, self.service)

    async def serve_https(self, runner: web.AppRunner) -> int:
        before = set(map(tuple, runner.addresses))
        site = web.TCPSite(runner, self.bind, self.port, ssl_context=self.ssl_context)
        await site.start()
        added = [a for a in map(tuple, runner.addresses) if a not in before]
        self.https_port = int(added[0][1]) if added else self.port
        log.info("webrtc page listening", extra={"address": f"https://{self.bind}:{self.https_port}/"})
        return self.https_port


async def start_webrtc(
    config: GatewayConfig,
    users: UserStore,
    cdrs: CdrStore,
    sip_address: Addr,
    registry: CollectorRegistry,
    clock: Clock,
    stack: AsyncExitStack,
) -> WebRtcGateway | None:
    cfg = config.webrtc
    if not cfg.enabled:
        return None
    tuned = aiortc_glue.apply_transport_tuning(cfg)
    log.info("webrtc transport tuning", extra={k: v for k, v in tuned.items()})
    # aiortc decides at construction whether to log every packet, aioice logs every ICE check:
    # both only warn here, whatever the gateway's level.
    for name in ("aiortc", "aioice"):
        logging.getLogger(name).setLevel(logging.WARNING)
    secrets = load_or_create(config.data_path, (TOKEN_SECRET,))
    tokens = TokenIssuer(secrets.bytes(TOKEN_SECRET), cfg.session_ttl_s)
    names = [*cfg.certificate_names, cfg.https_bind, sip_address[0], *cfg.ice_addresses]
    context, cert_path, created = certs.load_or_generate(
        cfg.certificate, cfg.private_key, config.data_path / "tls", names
    )
    if created:
        log.warning("generated a self-signed certificate for the browser phone", extra={"path": str(cert_path)})
    sip = config.sip
    timers = TimerConfig(t1=sip.t1_ms / 1000, t2=sip.t2_ms / 1000, t4=sip.t4_ms / 1000)
    service = WebRtcService(
        cfg,
        users,
        cdrs,
        config.tenant_for_domain,
        sip_address,
        tokens,
        WebRtcMetrics(registry),
        clock,
        timers,
        user_agent=f"{sip.user_agent}-WebRTC",
    )
    await service.start()
    stack.push_async_callback(service.stop)
    return WebRtcGateway(service, context, cfg.https_bind, cfg.https_port)
